"""bpfproxy: an eBPF service load balancer for Kubernetes (a kube-proxy replacement).

Data flow: controller (sources -> trackers -> runner -> translate/plan/diff -> sync) writes the BPF
maps through loader; the C programs in bpf/ read them per packet. This package holds the CLI and
the network-namespace lab; loader and controller are mapped in as bpfproxy.loader and
bpfproxy.controller.
"""

__version__ = "0.1.0"
