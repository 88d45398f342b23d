"""bpfproxy.loader: compiles the C datapath with bcc, pins and types its maps, attaches programs.

Place in the data flow: the controller's sync hands ordered map writes to this package, which is
the only code that talks to the kernel's bpf() syscall and tc.
"""
