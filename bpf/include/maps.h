/* maps.h: every map of the datapath, pinned under PIN_DIR with versioned names (a layout change means a new name). */
#ifndef BPFPROXY_MAPS_H
#define BPFPROXY_MAPS_H

#include "consts.h"
#include "structs.h"

/* pin directory, set by the loader as a string literal (-DPIN_DIR="\"/sys/fs/bpf/bpfproxy\"") */
#ifndef PIN_DIR
#error "PIN_DIR must be defined by the loader"
#endif

/* frontends: slot 0 is the service entry, slots 1..count name backends; address entries mark frontend IPs */
BPF_TABLE_PINNED("hash", struct svc_key, struct svc_val, bpx_svc_v1, LB_MAP_MAX, PIN_DIR "/bpx_svc_v1");

/* backends by id (id 0 reserved) */
BPF_TABLE_PINNED("hash", __u32, struct backend, bpx_backend_v1, BACKEND_MAP_MAX, PIN_DIR "/bpx_backend_v1");

/* conntrack: forward and reply entries of every translated flow */
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_entry, bpx_ct_v1, CT_MAP_MAX, PIN_DIR "/bpx_ct_v1");

/* ClientIP session affinity: (frontend, client) -> backend */
BPF_TABLE_PINNED("lru_hash", struct affinity_key, struct affinity_val, bpx_affinity_v1, AFFINITY_MAP_MAX, PIN_DIR "/bpx_affinity_v1");

/* ports of fragmented datagrams to service addresses, learnt from the first fragment */
BPF_TABLE_PINNED("lru_hash", struct frag_key, struct frag_val, bpx_frag_v1, FRAG_MAP_MAX, PIN_DIR "/bpx_frag_v1");

/* per-CPU packet count of every verdict, indexed by enum verdict (v2: V_DROP_NO_SERVICE added) */
BPF_TABLE_PINNED("percpu_array", __u32, struct verdict_count, bpx_verdict_v2, V_MAX, PIN_DIR "/bpx_verdict_v2");

/* per-CPU packets and bytes forwarded per frontend, indexed by svc_id */
BPF_TABLE_PINNED("percpu_array", __u32, struct svc_stats, bpx_svcstat_v1, SVC_ID_MAX, PIN_DIR "/bpx_svcstat_v1");

/* frontend names for inspection, written by the agent only; allocated on demand */
BPF_TABLE_PINNED("hash", __u32, struct svc_name, bpx_svcname_v1, SVC_ID_MAX, PIN_DIR "/bpx_svcname_v1", BPF_F_NO_PREALLOC);

/* service CIDRs (--service-cidr): an address inside one that no frontend owns is dropped */
BPF_TABLE_PINNED("lpm_trie", struct svc_cidr_key, struct svc_cidr_val, bpx_svccidr_v1, SVC_CIDR_MAX, PIN_DIR "/bpx_svccidr_v1", BPF_F_NO_PREALLOC);

/* /16 prefixes known to hold no service address and no service CIDR: traffic to them passes at once.
 * Written by the agent (a bit is cleared before an address entry in its /16 is written); all zero,
 * as a fresh map is, means "nothing known": every packet takes the full path */
BPF_TABLE_PINNED("array", __u32, struct foreign_word, bpx_foreign_v1, FOREIGN_WORDS, PIN_DIR "/bpx_foreign_v1");

/* L4 ports no backend uses (bit set), so a packet entering a pod from one is no reply of a translated
 * flow and to_pod passes it at once. Written by the agent (a port's bit is cleared before a backend on
 * it is written); all zero, as a fresh map is, means "nothing known": every packet takes the full path */
BPF_TABLE_PINNED("array", __u32, struct foreign_word, bpx_quietport_v1, QUIET_PORT_WORDS, PIN_DIR "/bpx_quietport_v1");

#endif /* BPFPROXY_MAPS_H */
