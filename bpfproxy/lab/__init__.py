"""bpfproxy.lab: the self-contained network-namespace lab (node, client pod, backend pods) and demo.

Place in the data flow: outside it. The lab builds namespaces and veths, writes a YAML directory,
and runs the real agent in the node namespace, so the demo and the netns tests exercise the same
path a node does.
"""
