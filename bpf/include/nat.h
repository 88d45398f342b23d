/* nat.h: destination NAT toward a backend and the reverse translation of its replies. */
#ifndef BPFPROXY_NAT_H
#define BPFPROXY_NAT_H

#include "consts.h"
#include "parse.h"
#include "csum.h"

/* rewrite p's destination to addr:port (a later fragment: the address only); negative on failure */
static __always_inline int dnat_pkt(struct __sk_buff *skb, const struct pkt *p, __be32 addr, __be16 port)
{
	int res = rewrite_direct(skb, p, 0, addr, port);

	if (res <= 0)
		return res;
	if (rewrite_addr(skb, p, IP_DADDR_OFF, p->daddr, addr))
		return -1;
	return rewrite_port(skb, p, p->l4_off + offsetof(struct bpx_tcphdr, dest), p->dport, port);
}

/* rewrite p's source back to the frontend addr:port (a later fragment: the address only); negative on failure */
static __always_inline int revnat_pkt(struct __sk_buff *skb, const struct pkt *p, __be32 addr, __be16 port)
{
	int res = rewrite_direct(skb, p, 1, addr, port);

	if (res <= 0)
		return res;
	if (rewrite_addr(skb, p, IP_SADDR_OFF, p->saddr, addr))
		return -1;
	return rewrite_port(skb, p, p->l4_off + offsetof(struct bpx_tcphdr, source), p->sport, port);
}

#endif /* BPFPROXY_NAT_H */
