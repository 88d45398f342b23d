/* consts.h: sizes, flags and the verdict enum shared by every stage and read by Python. */
#ifndef BPFPROXY_CONSTS_H
#define BPFPROXY_CONSTS_H

/* entries in the service map: frontends, their backend slots and address entries
 * (10k services x 2 ports x 10 endpoints: 20k + 200k + 10k = 230k) */
#ifndef LB_MAP_MAX
#define LB_MAP_MAX 262144
#endif

/* entries in the backend map: one per (frontend, endpoint) (10k services x 2 ports x 10 endpoints: 200k) */
#ifndef BACKEND_MAP_MAX
#define BACKEND_MAP_MAX 262144
#endif

/* highest frontend id + 1: sizes the per-service counter array and the name map */
#ifndef SVC_ID_MAX
#define SVC_ID_MAX 65536
#endif

/* entries in the conntrack table (two per flow: forward and reply) */
#ifndef CT_MAP_MAX
#define CT_MAP_MAX 262144
#endif

/* entries in the session-affinity table (one per service and client address) */
#ifndef AFFINITY_MAP_MAX
#define AFFINITY_MAP_MAX 65536
#endif

/* entries in the fragment table (one per fragmented datagram in flight) */
#ifndef FRAG_MAP_MAX
#define FRAG_MAP_MAX 8192
#endif

/* entries in the service-CIDR trie (one per --service-cidr) */
#ifndef SVC_CIDR_MAX
#define SVC_CIDR_MAX 16
#endif

/* words of the foreign-prefix bitmap: one bit per /16 of the IPv4 space, 64 per word */
#define FOREIGN_WORDS 1024

/* words of the quiet-port bitmap: one bit per L4 port, 64 per word */
#define QUIET_PORT_WORDS 1024

/* bytes of the service name kept for inspection ("ns/name:port/proto") */
#define SVC_NAME_LEN 128

/* conntrack lifetime of an established TCP flow, ns (as kube-proxy's nf_conntrack default: 1 day is too long here, 6 h as Cilium) */
#ifndef CT_LIFETIME_TCP_NS
#define CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#endif

/* conntrack lifetime of a TCP flow that saw FIN or RST, ns */
#ifndef CT_LIFETIME_TCP_CLOSING_NS
#define CT_LIFETIME_TCP_CLOSING_NS (10ULL * 1000000000ULL)
#endif

/* 1: a TCP RST deletes both conntrack entries of its flow at once (0: they live CT_LIFETIME_TCP_CLOSING_NS) */
#ifndef CT_DELETE_ON_RST
#define CT_DELETE_ON_RST 1
#endif

/* conntrack lifetime of a non-TCP flow, ns */
#ifndef CT_LIFETIME_NONTCP_NS
#define CT_LIFETIME_NONTCP_NS (60ULL * 1000000000ULL)
#endif

/* lifetime of a fragment entry, ns */
#define FRAG_LIFETIME_NS (2ULL * 1000000000ULL)

/* slot 0 of a frontend holds its service entry; backend slots are 1..count */
#define SVC_SLOT_MASTER 0

/* backend id 0 is never allocated: an unprogrammed slot never forwards */
#define BACKEND_ID_NONE 0

/* frontend id 0 is never allocated */
#define SVC_ID_NONE 0

/* svc_key.scope: the backend set for traffic from outside the cluster (and the only one so far) */
#define SVC_SCOPE_EXT 0
/* svc_key.scope: the backend set for traffic from inside (internalTrafficPolicy) */
#define SVC_SCOPE_INT 1

/* svc_val.flags: ClientIP session affinity, timeout in affinity_timeout */
#define SVC_F_AFFINITY (1U << 0)
/* svc_val.flags: no usable endpoint for this traffic: drop instead of reject */
#define SVC_F_DROP_NO_EP (1U << 1)
/* svc_val.flags: address entry (port 0, proto 0): ports and protocols not served are rejected */
#define SVC_F_ADDR (1U << 2)

/* backend.flags: endpoint is terminating: keeps its flows, gets no new ones */
#define BE_F_TERMINATING (1U << 0)

/* ct_key.dir: entry keyed by the original tuple, client to frontend */
#define CT_DIR_FWD 0
/* ct_key.dir: entry keyed by the reply tuple, backend to client */
#define CT_DIR_REPLY 1

/* ct_entry.tcp_flags: a FIN was seen */
#define CT_F_FIN (1U << 0)
/* ct_entry.tcp_flags: an RST was seen */
#define CT_F_RST (1U << 1)

/* one counter per verdict; Python parses this enum by name, keep one member per line */
enum verdict {
	V_PASS = 0,              /* not service traffic: passed untouched */
	V_FWD_NEW = 1,           /* new flow: backend chosen, DNAT */
	V_FWD_ESTABLISHED = 2,   /* conntrack hit: DNAT to the recorded backend */
	V_FWD_REBALANCED = 3,    /* conntrack hit whose backend is gone: moved to a live one */
	V_FWD_AFFINITY = 4,      /* new flow sent to the client's affinity backend */
	V_REVNAT = 5,            /* reply translated back to the frontend address and port */
	V_REJECT_TCP_RST = 6,    /* no endpoint or port not served: TCP reset sent back */
	V_REJECT_ICMP = 7,       /* no endpoint or port not served: ICMP port unreachable sent back */
	V_DROP_NO_EP = 8,        /* no usable endpoint for this traffic and the service says drop */
	V_DROP_BAD_SLOT = 9,     /* a slot within count holds no live backend */
	V_DROP_MALFORMED = 10,   /* truncated or invalid header on a packet to a service address */
	V_DROP_FRAG = 11,        /* non-first fragment to a service address whose first was not seen */
	V_DROP_REJECT_FAIL = 12, /* the reject reply could not be built */
	V_DROP_NAT_FAIL = 13,    /* a rewrite helper failed */
	V_DROP_ICMP_ERROR = 14,  /* ICMP error to a service address: never answered with another */
	V_DROP_NO_SERVICE = 15,  /* destination inside a service CIDR that no service owns */
	V_MAX = 16,              /* number of verdicts */
};

#endif /* BPFPROXY_CONSTS_H */
