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

/* the ip header checksum after a 32-bit field changed from `from` to `to` (RFC 1624 eqn 3, as the
 * kernel's csum_replace4); the words are summed in memory order, so byte order does not matter */
static __always_inline __u16 bpx_csum_replace4(__u16 check, __be32 from, __be32 to)
{
	__u32 s = (__u16)~check;

	s += (~from & 0xffff) + (~from >> 16);
	s += (to & 0xffff) + (to >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* offset of the L4 checksum of p's packet (tcp or udp) */
static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct bpx_tcphdr, check) : offsetof(struct udphdr, check));
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

/* rewrite p's source (is_src) or destination address and port in place: address, port and ip checksum
 * by direct writes, the L4 checksum with bpf_l4_csum_replace, which knows whether the skb holds a full
 * checksum or only the pseudo-header one (CHECKSUM_PARTIAL: then only the address change applies).
 * 0 on success, negative on failure, 1 when the headers are not in the linear area (nothing written) */
static __always_inline int rewrite_direct(struct __sk_buff *skb, const struct pkt *p, int is_src, __be32 addr,
					  __be16 port)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + IP_OFF;
	/* l4_off <= ETH_HLEN + 60: the mask only tells the verifier so */
	__be16 *ports = data + (p->l4_off & 0x7f);
	int l4 = p->frag != PKT_FRAG_LATER;
	__be16 old_port = 0;
	__be32 old_addr;
	__u32 csum_off;

	if ((void *)(ip + 1) > data_end || (l4 && (void *)(ports + 2) > data_end))
		return 1;
	if (is_src) {
		old_addr = ip->saddr;
		ip->saddr = addr;
	} else {
		old_addr = ip->daddr;
		ip->daddr = addr;
	}
	ip->check = bpx_csum_replace4(ip->check, old_addr, addr);
	if (!l4)
		return 0;
	old_port = ports[is_src ? 0 : 1];
	ports[is_src ? 0 : 1] = port;
	csum_off = l4_csum_off(p);
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, addr, l4_csum_flags(p) | BPF_F_PSEUDO_HDR | sizeof(addr)))
		return -1;
	if (old_port != port && bpf_l4_csum_replace(skb, csum_off, old_port, port, l4_csum_flags(p) | sizeof(port)))
		return -1;
	return 0;
}

#endif /* BPFPROXY_CSUM_H */
