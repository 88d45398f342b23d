/* counters.h: per-CPU verdict counters and per-service packet/byte counters. */
#ifndef BPFPROXY_COUNTERS_H
#define BPFPROXY_COUNTERS_H

#include "maps.h"
#include "map_ops.h"

/* add one packet to the counter of verdict v */
static __always_inline void count_verdict(__u32 v)
{
	struct verdict_count *c = verdict_map_lookup(&v);

	if (c)
		c->packets++;
}

/* add one forwarded packet of len bytes to frontend svc_id */
static __always_inline void count_svc(__u32 svc_id, __u32 len)
{
	struct svc_stats *s = svcstat_map_lookup(&svc_id);

	if (s) {
		s->packets++;
		s->bytes += len;
	}
}

#endif /* BPFPROXY_COUNTERS_H */
