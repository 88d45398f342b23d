/* affinity.h: ClientIP session affinity: a client's new flows stick to one backend for a while. */
#ifndef BPFPROXY_AFFINITY_H
#define BPFPROXY_AFFINITY_H

#include "maps.h"
#include "map_ops.h"

/* nanoseconds per second */
#define SEC_NS 1000000000ULL

/* the client's affinity backend for frontend svc if still valid (NULL otherwise), its id in *id; refreshes it */
static __always_inline struct backend *lookup_affinity(const struct svc_val *svc, __be32 client, __u64 now,
							__u32 *id)
{
	struct affinity_key k = { .svc_id = svc->svc_id, .client = client };
	struct affinity_val *a = affinity_map_lookup(&k);
	struct backend *be;

	if (!a || now - a->last_used > (__u64)svc->affinity_timeout * SEC_NS)
		return NULL;
	*id = a->backend_id;
	be = backend_map_lookup(id);
	if (!be || be->svc_id != svc->svc_id || (be->flags & BE_F_TERMINATING))
		return NULL;
	a->last_used = now;
	return be;
}

/* make backend_id the client's affinity backend for frontend svc_id from now on */
static __always_inline void record_affinity(__u32 svc_id, __be32 client, __u32 backend_id, __u64 now)
{
	struct affinity_key k = { .svc_id = svc_id, .client = client };
	struct affinity_val v = { .last_used = now, .backend_id = backend_id };

	affinity_map_update(&k, &v);
}

#endif /* BPFPROXY_AFFINITY_H */
