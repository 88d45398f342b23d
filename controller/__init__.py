"""bpfproxy.controller: sources -> trackers -> bounded-frequency runner -> translate -> plan -> diff -> sync.

Everything up to the diff is pure and kernel-free; sync is the only writer of the BPF maps.
"""
