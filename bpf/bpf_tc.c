/* bpf_tc.c: tc entry points on the host side of pod veths: from_pod (ingress) load-balances, to_pod (egress) reverse-translates. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "consts.h"
#include "maps.h"
#include "map_ops.h"

/* the map accessors of map_ops.h, here because bcc rewrites its map syntax in the main file only */
static __always_inline struct svc_val *svc_map_lookup(struct svc_key *k) { return bpx_svc_v1.lookup(k); }
static __always_inline struct backend *backend_map_lookup(__u32 *id) { return bpx_backend_v1.lookup(id); }
static __always_inline struct ct_entry *ct_map_lookup(struct ct_key *k) { return bpx_ct_v1.lookup(k); }
static __always_inline void ct_map_update(struct ct_key *k, struct ct_entry *v) { bpx_ct_v1.update(k, v); }
static __always_inline void ct_map_delete(struct ct_key *k) { bpx_ct_v1.delete(k); }
static __always_inline struct affinity_val *affinity_map_lookup(struct affinity_key *k) { return bpx_affinity_v1.lookup(k); }
static __always_inline void affinity_map_update(struct affinity_key *k, struct affinity_val *v) { bpx_affinity_v1.update(k, v); }
static __always_inline struct frag_val *frag_map_lookup(struct frag_key *k) { return bpx_frag_v1.lookup(k); }
static __always_inline void frag_map_update(struct frag_key *k, struct frag_val *v) { bpx_frag_v1.update(k, v); }
static __always_inline struct svc_cidr_val *svccidr_map_lookup(struct svc_cidr_key *k) { return bpx_svccidr_v1.lookup(k); }
static __always_inline struct foreign_word *foreign_map_lookup(__u32 *w) { return bpx_foreign_v1.lookup(w); }
static __always_inline struct foreign_word *quietport_map_lookup(__u32 *w) { return bpx_quietport_v1.lookup(w); }
static __always_inline struct verdict_count *verdict_map_lookup(__u32 *v) { return bpx_verdict_v2.lookup(v); }
static __always_inline struct svc_stats *svcstat_map_lookup(__u32 *svc_id) { return bpx_svcstat_v1.lookup(svc_id); }

#include "parse.h"
#include "counters.h"
#include "frag.h"
#include "conntrack.h"
#include "lb.h"
#include "nat.h"
#include "reject.h"

/* the tc action of verdict v (a reject sends the rewritten packet back out of the device it came from) */
static __always_inline int verdict_action(struct __sk_buff *skb, __u32 v)
{
	/* verdicts are ordered: passes and forwards first, then the two rejects, then drops */
	if (v <= V_REVNAT)
		return TC_ACT_OK;
	if (v == V_REJECT_TCP_RST || v == V_REJECT_ICMP)
		return bpf_redirect(skb->ifindex, 0);
	return TC_ACT_SHOT;
}

/* the verdict for a packet of another protocol than tcp/udp leaving a pod */
static __always_inline __u32 handle_other_from_pod(struct __sk_buff *skb, const struct pkt *p)
{
	if (!is_service_addr(p->daddr))
		return unowned_verdict(p->daddr);
	if (p->frag == PKT_FRAG_LATER)
		return V_DROP_FRAG;
	if (p->proto == IPPROTO_ICMP &&
	    (p->icmp_type == ICMP_DEST_UNREACH || p->icmp_type == ICMP_SOURCE_QUENCH ||
	     p->icmp_type == ICMP_REDIRECT || p->icmp_type == ICMP_TIME_EXCEEDED ||
	     p->icmp_type == ICMP_PARAMETERPROB))
		return V_DROP_ICMP_ERROR;
	return reject_icmp(skb, p);
}

/* whether skb is IPv4 to a foreign /16 (no service address, no service CIDR): read before any parsing */
static __always_inline int to_foreign(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;

	/* headers outside the linear area: parse_pkt pulls them and the full path decides */
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpx_htons(ETH_P_IP))
		return 0;
	return is_foreign_addr(ip->daddr);
}

/* the verdict for a packet leaving a pod: pass, forward to a backend, reject or drop */
static __always_inline __u32 process_from_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct svc_val *svc;
	__u64 now = 0;
	int res;

	/* foreign traffic (pod to pod, to the world) costs one array lookup */
	if (to_foreign(skb))
		return V_PASS;
	res = parse_pkt(skb, &p);
	if (res == PARSE_NOT_IPV4)
		return V_PASS;
	if (res == PARSE_BAD)
		return is_service_addr(p.daddr) ? V_DROP_MALFORMED : unowned_verdict(p.daddr);
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return handle_other_from_pod(skb, &p);
	if (p.frag == PKT_FRAG_LATER) {
		now = bpx_now_ns();
		if (!lookup_frag_ports(&p, now))
			return is_service_addr(p.daddr) ? V_DROP_FRAG : unowned_verdict(p.daddr);
	}
	svc = lookup_frontend(&p);
	if (!svc) {
		if (!is_service_addr(p.daddr))
			return unowned_verdict(p.daddr);
		return reject_pkt(skb, &p);
	}
	if (!now)
		now = bpx_now_ns();
	if (p.frag == PKT_FRAG_FIRST)
		record_frag(&p, now);
	return forward_pkt(skb, &p, svc, now);
}

/* whether skb is an unfragmented TCP/UDP segment from a port no backend uses: read before any parsing */
static __always_inline int from_quiet_port(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	__be16 *ports;
	__u32 port, w;
	struct foreign_word *q;

	/* headers outside the linear area, fragments, other protocols: the full path decides */
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpx_htons(ETH_P_IP) || ip->ihl < 5 ||
	    (ip->frag_off & bpx_htons(IP_FLAG_MF | IP_OFFSET_MASK)) ||
	    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return 0;
	ports = (void *)ip + ((ip->ihl * 4) & 0x3f);
	if ((void *)(ports + 1) > data_end)
		return 0;
	port = bpx_ntohs(ports[0]);
	w = port >> 6;
	q = quietport_map_lookup(&w);
	return q && ((q->bits >> (port & 63)) & 1);
}

/* the verdict for a packet entering a pod: a backend's reply is translated back to the frontend */
static __always_inline __u32 process_to_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct ct_entry *e;
	__u64 now = 0;
	__be32 nat_addr;
	__be16 nat_port;

	/* requests to the pod and replies from ports no backend uses cost one array lookup */
	if (from_quiet_port(skb))
		return V_PASS;
	if (parse_pkt(skb, &p) != PARSE_OK || (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP))
		return V_PASS;
	if (p.frag == PKT_FRAG_LATER) {
		now = bpx_now_ns();
		if (!lookup_frag_ports(&p, now))
			return V_PASS;
	}
	if (!now)
		now = bpx_now_ns();
	e = lookup_ct(&p, CT_DIR_REPLY, now);
	if (!e)
		return V_PASS;
	/* a SYN on a closing reply tuple opens another connection that reuses it (e.g. the client now
	 * talks to the backend pod directly): not ours; drop the stale entry so its packets stay untouched */
	if (ct_syn_on_closing(e, &p)) {
		drop_reply_ct(&p);
		return V_PASS;
	}
	if (p.frag == PKT_FRAG_FIRST)
		record_frag(&p, now);
	nat_addr = e->nat_addr;
	nat_port = e->nat_port;
	refresh_ct(e, &p, now, CT_DIR_REPLY);
	if (revnat_pkt(skb, &p, nat_addr, nat_port))
		return V_DROP_NAT_FAIL;
	return V_REVNAT;
}

/* tc ingress of a pod's host-side veth: packets leaving the pod */
int from_pod(struct __sk_buff *skb)
{
	__u32 v = process_from_pod(skb);

	count_verdict(v);
	return verdict_action(skb, v);
}

/* tc egress of a pod's host-side veth: packets entering the pod */
int to_pod(struct __sk_buff *skb)
{
	__u32 v = process_to_pod(skb);

	count_verdict(v);
	return verdict_action(skb, v);
}
