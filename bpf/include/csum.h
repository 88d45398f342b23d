/* csum.h: checksum folding and the incremental address/port rewrites of NAT. */
#ifndef BPFPROXY_CSUM_H
#define BPFPROXY_CSUM_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/ip.h>
#include "parse.h"

/* offset of the ip checksum in the packet */
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
/* offset of the ip source address in the packet */
#define IP_SADDR_OFF (IP_OFF + offsetof(struct iphdr, saddr))
/* offset of the ip destination address in the packet */
#define IP_DADDR_OFF (IP_OFF + offsetof(struct iphdr, daddr))

/* fold a 32-bit partial sum (as bpf_csum_diff returns) into a 16-bit internet checksum */
static __always_inline __u16 fold_csum(__u64 sum)
{
	sum = (sum & 0xffffffff);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* offset of the L4 checksum of p's packet (tcp or udp) */
static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
}

/* flags for bpf_l4_csum_replace: a zero udp checksum means "none" and must stay zero */
static __always_inline __u64 l4_csum_flags(const struct pkt *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* replace the ip address at addr_off (saddr or daddr), fixing the ip and (pseudo-header) L4 checksums */
static __always_inline int rewrite_addr(struct __sk_buff *skb, const struct pkt *p, __u32 addr_off,
					__be32 old_addr, __be32 new_addr)
{
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)))
		return -1;
	/* a later fragment carries no L4 header: the first fragment's checksum covers the datagram */
	if (p->frag == PKT_FRAG_LATER)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), old_addr, new_addr,
				l4_csum_flags(p) | BPF_F_PSEUDO_HDR | sizeof(new_addr)))
		return -1;
	return 0;
}

/* replace the L4 port at port_off (source or destination), fixing the L4 checksum */
static __always_inline int rewrite_port(struct __sk_buff *skb, const struct pkt *p, __u32 port_off,
					__be16 old_port, __be16 new_port)
{
	if (p->frag == PKT_FRAG_LATER || old_port == new_port)
		return 0;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0))
		return -1;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), old_port, new_port, l4_csum_flags(p) | sizeof(new_port)))
		return -1;
	return 0;
}

#endif /* BPFPROXY_CSUM_H */
