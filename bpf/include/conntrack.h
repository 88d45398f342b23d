/* conntrack.h: forward and reply entries of translated flows, their lifetimes and refresh. */
#ifndef BPFPROXY_CONNTRACK_H
#define BPFPROXY_CONNTRACK_H

#include "maps.h"
#include "map_ops.h"
#include "parse.h"

/* the clock of expiries and affinity: CLOCK_MONOTONIC as bpf_ktime_get_ns() but at tick resolution,
 * without reading the clocksource (measured 40 ns per call under virtualisation, the coarse one ~free) */
#define bpx_now_ns() bpf_ktime_get_coarse_ns()

/* an expiry is only rewritten when it would move by more than this, ns (keeps the hot path read-only) */
#define CT_REFRESH_SLACK_NS 1000000000ULL

/* fill k with p's tuple as seen (no swap) in direction dir */
static __always_inline void fill_ct_key(struct ct_key *k, const struct pkt *p, __u8 dir)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad[0] = 0;
	k->pad[1] = 0;
}

/* the CT_F_* flags a packet adds to its entry's flags (a pure SYN clears them: a new or retransmitted open) */
static __always_inline __u8 track_tcp_flags(const struct pkt *p, __u8 flags)
{
	if (p->proto != IPPROTO_TCP || p->frag == PKT_FRAG_LATER)
		return flags;
	if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		flags = 0;
	if (p->tcp_flags & TCPF_FIN)
		flags |= CT_F_FIN;
	if (p->tcp_flags & TCPF_RST)
		flags |= CT_F_RST;
	return flags;
}

/* lifetime of an entry of protocol proto with CT_F_* flags */
static __always_inline __u64 ct_lifetime(__u8 proto, __u8 flags)
{
	if (proto != IPPROTO_TCP)
		return CT_LIFETIME_NONTCP_NS;
	if (flags & (CT_F_FIN | CT_F_RST))
		return CT_LIFETIME_TCP_CLOSING_NS;
	return CT_LIFETIME_TCP_NS;
}

/* the live entry of p's tuple in direction dir, or NULL when absent or expired */
static __always_inline struct ct_entry *lookup_ct(const struct pkt *p, __u8 dir, __u64 now)
{
	struct ct_key k;
	struct ct_entry *e;

	fill_ct_key(&k, p, dir);
	e = ct_map_lookup(&k);
	if (!e || e->expires <= now)
		return NULL;
	return e;
}

/* whether p opens a new connection on a tuple whose entry e is closing (FIN or RST seen): as Linux
 * conntrack kills a closing/TIME_WAIT entry on a new SYN, the flow gets a fresh backend choice;
 * a retransmitted SYN of a live entry keeps its backend */
static __always_inline int ct_reopens(const struct ct_entry *e, const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && p->frag != PKT_FRAG_LATER &&
	       (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN && (e->tcp_flags & (CT_F_FIN | CT_F_RST));
}

/* the key of the other direction's entry of e's flow, p being a packet that hit e in direction dir */
static __always_inline void ct_peer_key(struct ct_key *k, const struct ct_entry *e, const struct pkt *p, __u8 dir)
{
	fill_ct_key(k, p, dir == CT_DIR_FWD ? CT_DIR_REPLY : CT_DIR_FWD);
	if (dir == CT_DIR_FWD) {
		/* forward packet client -> frontend; e holds the backend: reply key backend -> client */
		k->saddr = e->nat_addr;
		k->daddr = p->saddr;
		k->sport = e->nat_port;
		k->dport = p->sport;
	} else {
		/* reply packet backend -> client; e holds the frontend: forward key client -> frontend */
		k->saddr = p->daddr;
		k->daddr = e->nat_addr;
		k->sport = p->dport;
		k->dport = e->nat_port;
	}
}

/* record p's tcp flags in e (hit in direction dir) and push its expiry, writing only when something really
 * changes. When the flow starts closing, the other direction's entry gets the flags and the short lifetime
 * too (a client's RST is only seen forward: without this the reply entry would live CT_LIFETIME_TCP_NS).
 * A RST ends the flow: both entries are deleted (CT_DELETE_ON_RST) so that dead flows do not fill the
 * LRU map, where every later insert would evict; e must not be used after this returns */
static __always_inline void refresh_ct(struct ct_entry *e, const struct pkt *p, __u64 now, __u8 dir)
{
	__u8 flags = track_tcp_flags(p, e->tcp_flags);
	__u64 expires = now + ct_lifetime(p->proto, flags);
	__u8 closing = flags & ~e->tcp_flags & (CT_F_FIN | CT_F_RST);
	struct ct_key k;
	struct ct_entry *peer;

	if (CT_DELETE_ON_RST && (closing & CT_F_RST)) {
		ct_peer_key(&k, e, p, dir);
		ct_map_delete(&k);
		fill_ct_key(&k, p, dir);
		ct_map_delete(&k);
		return;
	}
	if (flags != e->tcp_flags)
		e->tcp_flags = flags;
	if (expires > e->expires + CT_REFRESH_SLACK_NS || expires + CT_REFRESH_SLACK_NS < e->expires)
		e->expires = expires;
	if (!closing)
		return;
	ct_peer_key(&k, e, p, dir);
	peer = ct_map_lookup(&k);
	if (!peer)
		return;
	peer->tcp_flags |= closing;
	if (peer->expires > expires)
		peer->expires = expires;
}

/* whether p carries a SYN (a SYN or SYN-ACK) on a tuple whose entry e is closing (FIN or RST seen) */
static __always_inline int ct_syn_on_closing(const struct ct_entry *e, const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && p->frag != PKT_FRAG_LATER && (p->tcp_flags & TCPF_SYN) &&
	       (e->tcp_flags & (CT_F_FIN | CT_F_RST));
}

/* remove the reply entry of p's tuple (as seen, no swap) */
static __always_inline void drop_reply_ct(const struct pkt *p)
{
	struct ct_key k;

	fill_ct_key(&k, p, CT_DIR_REPLY);
	ct_map_delete(&k);
}

/* create the forward entry of p's flow to backend be and the reply entry the backend's answers hit */
static __always_inline void create_ct(const struct pkt *p, const struct backend *be, __u32 backend_id,
				      __u32 svc_id, __u64 now)
{
	struct ct_key k;
	struct ct_entry e = {};

	e.tcp_flags = track_tcp_flags(p, 0);
	e.expires = now + ct_lifetime(p->proto, e.tcp_flags);
	e.backend_id = backend_id;
	e.svc_id = svc_id;
	e.nat_addr = be->addr;
	e.nat_port = be->port;
	fill_ct_key(&k, p, CT_DIR_FWD);
	ct_map_update(&k, &e);

	k.saddr = be->addr;
	k.daddr = p->saddr;
	k.sport = be->port;
	k.dport = p->sport;
	k.dir = CT_DIR_REPLY;
	e.nat_addr = p->daddr;
	e.nat_port = p->dport;
	ct_map_update(&k, &e);
}

#endif /* BPFPROXY_CONNTRACK_H */
