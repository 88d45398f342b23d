/* lb.h: frontend lookup, backend choice for new flows, and the forward path of service traffic. */
#ifndef BPFPROXY_LB_H
#define BPFPROXY_LB_H

#include "maps.h"
#include "map_ops.h"
#include "parse.h"
#include "conntrack.h"
#include "affinity.h"
#include "nat.h"
#include "counters.h"
#include "reject.h"

/* the service entry (slot 0) of the frontend p is sent to, or NULL */
static __always_inline struct svc_val *lookup_frontend(const struct pkt *p)
{
	struct svc_key k = {
		.addr = p->daddr,
		.port = p->dport,
		.slot = SVC_SLOT_MASTER,
		.proto = p->proto,
		.scope = SVC_SCOPE_EXT,
	};

	return svc_map_lookup(&k);
}

/* whether addr is a frontend address (has an address entry: port 0, proto 0) */
static __always_inline int is_service_addr(__be32 addr)
{
	struct svc_key k = { .addr = addr };

	return svc_map_lookup(&k) != NULL;
}

/* whether addr's /16 is known to hold no service address and no service CIDR (one array lookup) */
static __always_inline int is_foreign_addr(__be32 addr)
{
	__u32 net = bpx_ntohl(addr) >> 16;
	__u32 w = net >> 6;
	struct foreign_word *f = foreign_map_lookup(&w);

	return f && ((f->bits >> (net & 63)) & 1);
}

/* whether addr lies inside a service CIDR (--service-cidr) */
static __always_inline int in_service_cidr(__be32 addr)
{
	struct svc_cidr_key k = { .prefixlen = 32, .addr = addr };

	return svccidr_map_lookup(&k) != NULL;
}

/* the verdict of a packet to addr that no frontend owns: dropped inside a service CIDR (as kube-proxy
 * drops traffic to unallocated ClusterIPs), passed untouched anywhere else */
static __always_inline __u32 unowned_verdict(__be32 addr)
{
	return in_service_cidr(addr) ? V_DROP_NO_SERVICE : V_PASS;
}

/* the backend in a random slot 1..count of frontend p/svc, its id in *id; NULL when the slot is empty */
static __always_inline struct backend *pick_slot(const struct pkt *p, const struct svc_val *svc, __u32 *id)
{
	struct svc_key k = {
		.addr = p->daddr,
		.port = p->dport,
		.proto = p->proto,
		.scope = SVC_SCOPE_EXT,
	};
	struct svc_val *slot;

	k.slot = (__u16)(bpf_get_prandom_u32() % svc->count + 1);
	slot = svc_map_lookup(&k);
	if (!slot || slot->backend_id == BACKEND_ID_NONE)
		return NULL;
	*id = slot->backend_id;
	return backend_map_lookup(id);
}

/* translate p to backend be and count it for frontend svc_id; verdict v on success */
static __always_inline __u32 forward_to(struct __sk_buff *skb, const struct pkt *p, const struct backend *be,
					__u32 svc_id, __u32 v)
{
	if (dnat_pkt(skb, p, be->addr, be->port))
		return V_DROP_NAT_FAIL;
	count_svc(svc_id, skb->len);
	return v;
}

/* forward p (to frontend svc): its conntrack backend if still valid, else a newly chosen one */
static __always_inline __u32 forward_pkt(struct __sk_buff *skb, const struct pkt *p, const struct svc_val *svc,
					 __u64 now)
{
	struct ct_entry *e = lookup_ct(p, CT_DIR_FWD, now);
	struct backend *be = NULL;
	__u32 v = V_FWD_NEW;
	__u32 id = BACKEND_ID_NONE;

	/* a new SYN on a closing tuple is a new flow: fresh choice, affinity honoured, new entries */
	if (e && ct_reopens(e, p))
		e = NULL;
	if (e) {
		id = e->backend_id;
		be = backend_map_lookup(&id);
		/* graceful termination: terminating backends and empty frontends keep their flows */
		if (be && be->svc_id == e->svc_id && e->svc_id == svc->svc_id) {
			refresh_ct(e, p, now, CT_DIR_FWD);
			return forward_to(skb, p, be, svc->svc_id, V_FWD_ESTABLISHED);
		}
		/* the backend is gone or its id was reused: never black-hole, pick a live one */
		v = V_FWD_REBALANCED;
		be = NULL;
	}
	if (svc->count == 0) {
		if (p->frag == PKT_FRAG_LATER)
			return V_DROP_FRAG;
		if (svc->flags & SVC_F_DROP_NO_EP)
			return V_DROP_NO_EP;
		return reject_pkt(skb, p);
	}
	if (svc->flags & SVC_F_AFFINITY) {
		be = lookup_affinity(svc, p->saddr, now, &id);
		if (be && v == V_FWD_NEW)
			v = V_FWD_AFFINITY;
	}
	if (!be) {
		be = pick_slot(p, svc, &id);
		if (!be)
			return V_DROP_BAD_SLOT;
		if (svc->flags & SVC_F_AFFINITY)
			record_affinity(svc->svc_id, p->saddr, id, now);
	}
	create_ct(p, be, id, svc->svc_id, now);
	return forward_to(skb, p, be, svc->svc_id, v);
}

#endif /* BPFPROXY_LB_H */
