/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * BPF-only helpers shared by every observer object: the config carrier, the
 * per-object counters and ring-buffer wake-up batching. Each object that
 * includes this defines its own maps (one carrier, one ring, one stats array
 * per object), so the agent can write and read them object by object.
 */
#ifndef __TAPIO_COMMON_BPF_H
#define __TAPIO_COMMON_BPF_H

#include "tapio_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tapio_config);
} tapio_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TAPIO_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tapio_stats SEC(".maps");

static __always_inline void tapio_stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&tapio_stats, &idx);

	if (v)
		*v += 1;
}

/*
 * The carrier, when the config is live for @flag; NULL when the program
 * must not emit (all-zero, wrong ABI version, or observer flag clear).
 * Per-event state cleanup must not depend on this.
 *
 * A pointer into the map value, not a copy: copying all 200 bytes to the
 * stack on every run cost more than the handful of fields a program reads,
 * and a copy is no more consistent than direct loads (the agent's update
 * is a plain memcpy into the same value either way). Programs read each
 * field they need once; list entries are written before their count.
 */
static __always_inline const struct tapio_config *tapio_config_get(__u32 flag)
{
	__u32 zero = 0;
	const struct tapio_config *c = bpf_map_lookup_elem(&tapio_config, &zero);
	__u32 abi;

	if (!c)
		return NULL;
	abi = c->abi_version;
	if (abi != TAPIO_ABI_VERSION) {
		tapio_stat_inc(abi ? TAPIO_STAT_CFG_ABI : TAPIO_STAT_CFG_ZERO);
		return NULL;
	}
	return (c->flags & flag) ? c : NULL;
}

/*
 * Submit flags for a record of @size bytes just reserved in a ring of
 * @ring_bytes (a power of two). The drain thread is woken once per quarter
 * ring queued; otherwise it picks records up on its next tick, so a storm
 * costs a wake-up per ~1,000 records (network: 128 KiB of 136-byte
 * records), not per record (DESIGN.md,
 * performance by design), and three quarters of the ring stay free for
 * the burst that comes before the woken drain runs.
 *
 * Only the record that takes the queued bytes across a multiple of the
 * mark wakes it. Forcing a wake-up for every record while the queue stays
 * over the mark (until the woken drain gets to it) cost a refused storm
 * ~125 ns per refusal in self-interrupts (BENCHMARKS.md). The ring's poll
 * is level-triggered, so one wake-up per crossing is enough: a drain busy
 * when it comes finds the data on its next wait. Two CPUs reserving at
 * once can step over a window together; the next multiple wakes it, and
 * the drain's tick bounds the wait whatever happens.
 */
static __always_inline __u64 tapio_rb_flags(void *rb, __u32 size, __u32 ring_bytes)
{
	/* What the record occupies: its header plus the payload, 8-aligned. */
	__u64 len = (size + BPF_RINGBUF_HDR_SZ + 7) & ~7ULL;
	__u64 mark = ring_bytes / 4;
	__u64 avail = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);

	return avail >= mark && (avail & (mark - 1)) < len ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void tapio_hdr(struct tapio_event_hdr *h, const struct tapio_config *cfg,
				      __u16 kind, __u16 size)
{
	h->ts_ns = bpf_ktime_get_ns();
	h->generation = cfg->generation;
	h->kind = kind;
	h->size = size;
}

#endif /* __TAPIO_COMMON_BPF_H */
