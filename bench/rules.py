"""kube-proxy's rules for the benchmark services: iptables-restore text and an `nft -f` ruleset.

Place in the data flow: B2's contenders. Pure text generation, laid out as kube-proxy writes it
(pkg/proxy/iptables and pkg/proxy/nftables): for iptables, KUBE-SERVICES matches each ClusterIP
and jumps to a KUBE-SVC-* chain that picks a KUBE-SEP-* chain per endpoint with
`statistic --probability 1/(n-i)`, and each KUBE-SEP-* DNATs; for nftables, one `service-ips`
verdict map sends each ClusterIP to a per-service chain that picks an endpoint chain with
`numgen random mod n`. Masquerade marking for traffic from outside the cluster CIDR is written
as kube-proxy writes it (it does not match pod traffic). b2_e2e loads the text with
iptables-restore / nft -f inside the node namespace.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from workload import NAMESPACE, BenchService

#: kube-proxy's masquerade mark
MASQ_MARK = "0x4000"
#: the nftables table kube-proxy owns
NFT_TABLE = "kube-proxy"


def chain_hash(text: str) -> str:
    """kube-proxy's chain-name hash of text: base32 of its sha256, first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_name(svc: BenchService) -> str:
    """ "ns/name:port-name" of the service's only port (kube-proxy's ServicePortName)."""
    return f"{NAMESPACE}/{svc.name}:http"


def svc_chain(svc: BenchService) -> str:
    """KUBE-SVC-<hash> of a service port."""
    return "KUBE-SVC-" + chain_hash(port_name(svc) + "tcp")


def sep_chain(svc: BenchService, endpoint: tuple[str, int]) -> str:
    """KUBE-SEP-<hash> of one endpoint of a service port."""
    return "KUBE-SEP-" + chain_hash(port_name(svc) + "tcp" + f"{endpoint[0]}:{endpoint[1]}")


def probability(index: int, count: int) -> str:
    """The statistic probability of endpoint index of count, as kube-proxy formats it."""
    return f"{1.0 / (count - index):0.10f}"


def iptables_restore(services: Sequence[BenchService], cluster_cidr: str) -> str:
    """The nat and filter tables kube-proxy's iptables mode writes for services (iptables-restore input)."""
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
              ":KUBE-NODEPORTS - [0:0]"]  # fmt: skip
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    for svc in services:
        name, sc = port_name(svc), svc_chain(svc)
        chains.append(f":{sc} - [0:0]")
        match = f"-m tcp -p tcp -d {svc.ip}/32 --dport {svc.port}"
        rules.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {match} -j {sc}')
        rules.append(f'-A {sc} -m comment --comment "{name} cluster IP" {match} ! -s {cluster_cidr} -j KUBE-MARK-MASQ')
        count = len(svc.endpoints)
        for i, ep in enumerate(svc.endpoints):
            sep = sep_chain(svc, ep)
            chains.append(f":{sep} - [0:0]")
            stat = f"-m statistic --mode random --probability {probability(i, count)} " if i < count - 1 else ""
            rules.append(f'-A {sc} -m comment --comment "{name} -> {ep[0]}:{ep[1]}" {stat}-j {sep}')
            rules.append(f"-A {sep} -m comment --comment {name} -s {ep[0]}/32 -j KUBE-MARK-MASQ")
            rules.append(f"-A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {ep[0]}:{ep[1]}")
    rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    filter_table = [
        "*filter",
        ":KUBE-FORWARD - [0:0]",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} '
        "-j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
        "RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
    ]
    return "\n".join(["*nat", *chains, *rules, "COMMIT", *filter_table]) + "\n"


def nft_service_chain(svc: BenchService) -> str:
    """service-<hash8>-<ns>/<name>/tcp/<port-name>, as kube-proxy's nftables mode names it."""
    return f"service-{chain_hash(port_name(svc) + 'tcp')[:8]}-{NAMESPACE}/{svc.name}/tcp/http"


def nft_endpoint_chain(svc: BenchService, endpoint: tuple[str, int]) -> str:
    """endpoint-<hash8>-<ns>/<name>/tcp/<port-name>__<ip>/<port>."""
    h = chain_hash(port_name(svc) + "tcp" + f"{endpoint[0]}:{endpoint[1]}")[:8]
    return f"endpoint-{h}-{NAMESPACE}/{svc.name}/tcp/http__{endpoint[0]}/{endpoint[1]}"


def nft_ruleset(services: Sequence[BenchService], cluster_cidr: str) -> str:
    """The `nft -f` input of kube-proxy's nftables mode for services (replaces the table if present)."""
    t = f"ip {NFT_TABLE}"
    lines = [
        f"add table {t} {{ comment \"rules for kube-proxy\" ; }}",
        f"delete table {t}",
        f"add table {t} {{ comment \"rules for kube-proxy\" ; }}",
        f"add chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"add chain {t} masquerading",
        f"add rule {t} masquerading mark and {MASQ_MARK} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK}",
        f"add rule {t} masquerading masquerade fully-random",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; "
        f"comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}",
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; "
        "comment \"NodePort traffic\" ; }",
        f"add chain {t} services",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
        "vmap @service-nodeports",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}",
        f"add rule {t} nat-prerouting jump services",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add rule {t} nat-output jump services",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"add rule {t} nat-postrouting jump masquerading",
    ]
    elements = []
    for svc in services:
        sc = nft_service_chain(svc)
        lines.append(f"add chain {t} {sc}")
        lines.append(f"add rule {t} {sc} ip daddr {svc.ip} tcp dport {svc.port} ip saddr != {cluster_cidr} "
                     "jump mark-for-masquerade")  # fmt: skip
        gotos = []
        for i, ep in enumerate(svc.endpoints):
            ec = nft_endpoint_chain(svc, ep)
            lines.append(f"add chain {t} {ec}")
            lines.append(f"add rule {t} {ec} ip saddr {ep[0]} jump mark-for-masquerade")
            lines.append(f"add rule {t} {ec} meta l4proto tcp dnat to {ep[0]}:{ep[1]}")
            gotos.append(f"{i} : goto {ec}")
        if gotos:
            lines.append(f"add rule {t} {sc} numgen random mod {len(gotos)} vmap {{ {' , '.join(gotos)} }}")
        elements.append(f"{svc.ip} . tcp . {svc.port} : goto {sc}")
    for start in range(0, len(elements), 1000):
        lines.append(f"add element {t} service-ips {{ {' , '.join(elements[start:start + 1000])} }}")
    return "\n".join(lines) + "\n"
