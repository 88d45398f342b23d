/* frag.h: ports of fragmented datagrams, learnt from the first fragment for the later ones. */
#ifndef BPFPROXY_FRAG_H
#define BPFPROXY_FRAG_H

#include "maps.h"
#include "map_ops.h"
#include "parse.h"

/* fill k with the datagram identity of p */
static __always_inline void fill_frag_key(struct frag_key *k, const struct pkt *p)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->id = p->ip_id;
	k->proto = p->proto;
	k->pad = 0;
}

/* remember the ports of a first fragment until FRAG_LIFETIME_NS after now */
static __always_inline void record_frag(const struct pkt *p, __u64 now)
{
	struct frag_key k;
	struct frag_val v = {};

	fill_frag_key(&k, p);
	v.expires = now + FRAG_LIFETIME_NS;
	v.sport = p->sport;
	v.dport = p->dport;
	frag_map_update(&k, &v);
}

/* fill the ports of a later fragment from its first fragment; false when unknown or stale */
static __always_inline int lookup_frag_ports(struct pkt *p, __u64 now)
{
	struct frag_key k;
	struct frag_val *v;

	fill_frag_key(&k, p);
	v = frag_map_lookup(&k);
	if (!v || v->expires <= now)
		return 0;
	p->sport = v->sport;
	p->dport = v->dport;
	return 1;
}

#endif /* BPFPROXY_FRAG_H */
