/* structs.h: every map key and value shared with Python (loader/structs.py mirrors these, tests compare). */
#ifndef BPFPROXY_STRUCTS_H
#define BPFPROXY_STRUCTS_H

#include <linux/types.h>

/* service map key: one frontend (address, port, protocol, scope) and a slot; 12 bytes */
struct svc_key {
	__be32 addr;  /* frontend IPv4 address, network order */
	__be16 port;  /* frontend port, network order; 0 in an address entry */
	__u16 slot;   /* 0: the service entry; 1..count: backend slots; host order */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP; 0 in an address entry */
	__u8 scope;   /* SVC_SCOPE_EXT or SVC_SCOPE_INT */
	__u8 pad[2];  /* zero */
};

/* service map value: slot 0 describes the frontend, other slots name a backend; 20 bytes */
struct svc_val {
	__u32 backend_id;       /* slots 1..count: backend id; slot 0: 0 */
	__u32 count;            /* slot 0: number of backend slots; others: 0 */
	__u32 svc_id;           /* frontend id (per-service counters, conntrack, affinity) */
	__u32 affinity_timeout; /* slot 0 with SVC_F_AFFINITY: seconds (Kubernetes: 1..86400) */
	__u16 flags;            /* SVC_F_* (slot 0) */
	__u16 pad;              /* zero */
};

/* backend map value: where a backend slot sends packets; key is the __u32 backend id; 12 bytes */
struct backend {
	__be32 addr;    /* endpoint IPv4 address, network order */
	__be16 port;    /* endpoint port, network order */
	__u8 proto;     /* IPPROTO_* */
	__u8 flags;     /* BE_F_* */
	__u32 svc_id;   /* frontend this backend belongs to: a conntrack entry is only valid for it */
};

/* conntrack key: a flow tuple and its direction; 16 bytes */
struct ct_key {
	__be32 saddr;  /* source address, network order */
	__be32 daddr;  /* destination address, network order */
	__be16 sport;  /* source port (ICMP: id), network order */
	__be16 dport;  /* destination port, network order */
	__u8 proto;    /* IPPROTO_* */
	__u8 dir;      /* CT_DIR_FWD: client->frontend; CT_DIR_REPLY: backend->client */
	__u8 pad[2];   /* zero */
};

/* conntrack value; 24 bytes */
struct ct_entry {
	__u64 expires;     /* bpf_ktime_get_ns() after which the entry is stale */
	__u32 backend_id;  /* forward: chosen backend; reply: the same */
	__u32 svc_id;      /* frontend id */
	__be32 nat_addr;   /* forward: backend address; reply: frontend address to restore */
	__be16 nat_port;   /* forward: backend port; reply: frontend port to restore */
	__u8 tcp_flags;    /* CT_F_* seen on this flow */
	__u8 pad;          /* zero */
};

/* session-affinity key: a frontend and a client address; 8 bytes */
struct affinity_key {
	__u32 svc_id;      /* frontend id */
	__be32 client;     /* client IPv4 address, network order */
};

/* session-affinity value; 16 bytes */
struct affinity_val {
	__u64 last_used;   /* bpf_ktime_get_ns() of the last new flow sent by this entry */
	__u32 backend_id;  /* backend the client sticks to */
	__u32 pad;         /* zero */
};

/* per-service packet counters (per-CPU array indexed by svc_id); 16 bytes */
struct svc_stats {
	__u64 packets;  /* packets forwarded to this frontend's backends */
	__u64 bytes;    /* their bytes (skb->len) */
};

/* per-verdict counter (per-CPU array indexed by enum verdict); 8 bytes */
struct verdict_count {
	__u64 packets;  /* packets that got this verdict */
};

/* fragment key: one fragmented datagram; 12 bytes */
struct frag_key {
	__be32 saddr;  /* source address, network order */
	__be32 daddr;  /* destination address, network order */
	__be16 id;     /* IP identification, network order */
	__u8 proto;    /* IPPROTO_* */
	__u8 pad;      /* zero */
};

/* fragment value: the ports seen in the first fragment; 16 bytes */
struct frag_val {
	__u64 expires;  /* bpf_ktime_get_ns() after which the entry is stale */
	__be16 sport;   /* source port of the datagram, network order */
	__be16 dport;   /* destination port of the datagram, network order */
	__u32 pad;      /* zero */
};

/* service-CIDR trie key: an IPv4 prefix in the kernel's lpm_trie layout; 8 bytes */
struct svc_cidr_key {
	__u32 prefixlen;  /* prefix length in bits, 0..32; lookups use 32 */
	__be32 addr;      /* network address, network order */
};

/* service-CIDR trie value; 4 bytes */
struct svc_cidr_val {
	__u32 flags;  /* zero (reserved) */
};

/* one word of a bitmap array (foreign prefixes: index /16 number >> 6; quiet ports: port >> 6); 8 bytes */
struct foreign_word {
	__u64 bits;  /* bit (n & 63): /16 n holds no service address nor CIDR / port n is used by no backend */
};

/* service name for inspection, indexed by svc_id; never read by the datapath */
struct svc_name {
	char name[128]; /* "namespace/name:port/proto", NUL-terminated (SVC_NAME_LEN) */
};

#endif /* BPFPROXY_STRUCTS_H */
