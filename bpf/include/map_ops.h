/* map_ops.h: declarations of the map accessors every stage uses; bpf_tc.c defines them.
 *
 * bcc rewrites its map syntax (`bpx_svc_v1.lookup(&k)`) only in the main source file: the same
 * call in an included header compiles to an indirect call the verifier rejects. So the entry file
 * holds one-line accessors written in bcc syntax, and the headers call those.
 */
#ifndef BPFPROXY_MAP_OPS_H
#define BPFPROXY_MAP_OPS_H

#include "structs.h"

/* frontend, slot or address entry of the service map, or NULL */
static __always_inline struct svc_val *svc_map_lookup(struct svc_key *k);
/* backend by id, or NULL */
static __always_inline struct backend *backend_map_lookup(__u32 *id);
/* conntrack entry, or NULL */
static __always_inline struct ct_entry *ct_map_lookup(struct ct_key *k);
/* insert or replace a conntrack entry */
static __always_inline void ct_map_update(struct ct_key *k, struct ct_entry *v);
/* remove a conntrack entry (absent: nothing happens) */
static __always_inline void ct_map_delete(struct ct_key *k);
/* affinity entry, or NULL */
static __always_inline struct affinity_val *affinity_map_lookup(struct affinity_key *k);
/* insert or replace an affinity entry */
static __always_inline void affinity_map_update(struct affinity_key *k, struct affinity_val *v);
/* fragment entry, or NULL */
static __always_inline struct frag_val *frag_map_lookup(struct frag_key *k);
/* insert or replace a fragment entry */
static __always_inline void frag_map_update(struct frag_key *k, struct frag_val *v);
/* the service CIDR holding the address of a /32 key, or NULL */
static __always_inline struct svc_cidr_val *svccidr_map_lookup(struct svc_cidr_key *k);
/* a word of the foreign-prefix bitmap, or NULL */
static __always_inline struct foreign_word *foreign_map_lookup(__u32 *w);
/* a word of the quiet-port bitmap, or NULL */
static __always_inline struct foreign_word *quietport_map_lookup(__u32 *w);
/* this CPU's counter of a verdict, or NULL */
static __always_inline struct verdict_count *verdict_map_lookup(__u32 *v);
/* this CPU's counters of a frontend, or NULL */
static __always_inline struct svc_stats *svcstat_map_lookup(__u32 *svc_id);

#endif /* BPFPROXY_MAP_OPS_H */
