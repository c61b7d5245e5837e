// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Storage observer: block request errors and slow completions.
 *
 * Facts this rests on (KERNEL-FACTS.md, checked on 6.18):
 *  - with tp_btf the struct request * is a unique key while the request is
 *    in flight; request structs are recycled afterwards;
 *  - completions often run in ksoftirqd or another task: nothing here ever
 *    reads the current task;
 *  - block_rq_complete gets (rq, blk_status_t error, nr_bytes) and fires
 *    before the request is advanced, so rq->__sector and rq->__data_len are
 *    still those of the part being completed; a partial completion
 *    (nr_bytes < __data_len) leaves the request in flight.
 *
 * Fields are read through bpf_rdonly_cast (rq_fields below), not with
 * BPF_CORE_READ: the loads are the JIT's own fault-tolerant loads (a bad
 * address reads 0, as a failed probe read leaves 0), not one helper call
 * per field, which was most of the cost of every healthy request
 * (BENCHMARKS.md). A plain tp_btf pointer would not do: the cast also
 * takes the raw tracepoint's integer argument, so
 * tests/storage_correlation.rs can still drive these programs as raw
 * tracepoints with made-up request pointers.
 *
 * Correlation (issue -> completion) is exact or the latency is not judged:
 *  - where the queue collects I/O statistics (a stats callback of
 *    writeback throttling, iolatency or kyber, or accounting turned on;
 *    wbt is on by default for every blk-mq disk here), blk_mq_start_request stamps
 *    rq->io_start_time_ns right after the issue tracepoint, and
 *    blk_mq_rq_ctx_init / blk_rq_init zero it whenever a struct request is
 *    (re)allocated. The request then carries its own issue time: no map,
 *    no state, and a recycled request or one completed without ever being
 *    issued (a flush's empty PREFLUSH write) can never inherit another's
 *    clock (KERNEL-FACTS: Block I/O). A requeued request is stamped again
 *    at its next issue, so the latency is that of the final dispatch;
 *  - elsewhere (no statistics on the queue, passthrough requests) issue
 *    records the time, op and sector, keyed by the request; a completion
 *    only uses an entry whose op and sector are the request's own, so a
 *    stale entry of a recycled request gives no latency;
 *  - requeue marks the entry; the next issue of it restarts the clock and
 *    counts a requeue; an issue of a request already in flight with no
 *    requeue between means a completion or requeue was missed: the entry is
 *    marked ambiguous and its completion's latency is dropped
 *    (TAPIO_STAT_CORR_DUP);
 *  - a completion with no issue time has no latency (TAPIO_STAT_CORR_MISSING),
 *    except a zero-byte success (the tail of a flush sequence), which carries
 *    nothing;
 *  - an error is reported with or without a latency;
 *  - merge deletes a request that was merged into another.
 * Entries are deleted at their final completion whatever the config, so a
 * disabled or all-zero config never leaves state behind.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tapio_common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MINORBITS 20
#define REQ_OP_MASK 0xff

/* The kernel's generic kfunc (6.2+): @obj as a read-only, untrusted
 * pointer to the kernel type @btf_id. Inlined by the verifier. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* @rq, whatever the verifier knew of it, as a pointer to read fields from. */
static __always_inline struct request *rq_fields(const void *rq)
{
	return bpf_rdonly_cast(rq, bpf_core_type_id_kernel(struct request));
}

#define INFLIGHT_REQUEUED  (1U << 0)
#define INFLIGHT_AMBIGUOUS (1U << 1)

/* The ring's size; the wake-up mark is a quarter of it (tapio_rb_flags). */
#define EVENTS_BYTES (512 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
} events SEC(".maps");

struct inflight {
	__u64 issue_ns;
	__u64 sector;    /* rq->__sector at issue (advanced by partial completions) */
	__u16 requeues;
	__u16 flags;
	__u32 op;        /* REQ_OP at issue */
};

/* One entry per request in flight on a queue without statistics: bounded
 * by the devices' queue depths in practice; LRU so an entry whose
 * completion never comes cannot leak. An evicted entry costs a counted
 * missing-issue drop, never a wrong latency. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

static __always_inline bool passthrough_op(__u32 op)
{
	return op == REQ_OP_DRV_IN || op == REQ_OP_DRV_OUT;
}

/*
 * True when blk_mq_start_request will stamp rq->io_start_time_ns: it does
 * so under QUEUE_FLAG_STATS, for every request but passthrough ones. The
 * flag is set exactly while the queue's stats have a callback registered
 * (writeback throttling, iolatency, kyber) or accounting enabled
 * (blk_stat_add_callback / blk_stat_enable_accounting). Read through that
 * struct rather than the flag: the flag's bit number changed when the
 * queue flags became an enum, the fields did not.
 */
static __always_inline bool own_clock(struct request *rq, __u32 op)
{
	struct blk_queue_stats *st;

	if (passthrough_op(op))
		return false;
	st = rq->q->stats;
	if (!st)
		return false;
	if ((void *)st->callbacks.next != (void *)&st->callbacks)
		return true;
	return st->accounting > 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(handle_sto__block_rq_issue, struct request *arg)
{
	struct request *rq = rq_fields(arg);
	struct inflight *f, n = {};
	__u64 key = ctx[0];
	__u32 op;
	__u64 now;

	/* Only a live observer creates state; completion cleans it up always. */
	if (!tapio_config_get(TAPIO_FLAG_STORAGE))
		return 0;
	op = rq->cmd_flags & REQ_OP_MASK;
	if (own_clock(rq, op))
		return 0;
	now = bpf_ktime_get_ns();
	f = bpf_map_lookup_elem(&inflight, &key);
	if (f) {
		if (f->flags & INFLIGHT_REQUEUED) {
			f->flags &= ~INFLIGHT_REQUEUED;
			if (f->requeues < 0xffff)
				f->requeues++;
		} else {
			f->flags |= INFLIGHT_AMBIGUOUS;
		}
		f->issue_ns = now;
		f->sector = rq->__sector;
		f->op = op;
		return 0;
	}
	n.issue_ns = now;
	n.sector = rq->__sector;
	n.op = op;
	bpf_map_update_elem(&inflight, &key, &n, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_requeue")
int BPF_PROG(handle_sto__block_rq_requeue, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct inflight *f = bpf_map_lookup_elem(&inflight, &key);

	if (f)
		f->flags |= INFLIGHT_REQUEUED;
	return 0;
}

SEC("tp_btf/block_rq_merge")
int BPF_PROG(handle_sto__block_rq_merge, struct request *rq)
{
	__u64 key = (__u64)rq;

	/* @rq was merged into another request and will be freed without a
	 * completion of its own. Merges happen before dispatch, so this is
	 * normally absent; deleting is cheap insurance against a stale key. */
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(handle_sto__block_rq_complete, struct request *arg, blk_status_t error,
	     unsigned int nr_bytes)
{
	struct request *rq = rq_fields(arg);
	const struct tapio_config *cfg;
	struct tapio_sto_event *e;
	struct inflight *f;
	__u64 key = ctx[0];
	__u64 now, start, sector, latency = 0, slow_ns;
	__u16 flags = 0, requeues = 0;
	__u32 data_len, cmd_flags, op, status = error;
	bool partial, known = false, ambiguous = false;

	now = bpf_ktime_get_ns();
	start = rq->io_start_time_ns;
	if (start && start <= now) {
		/* The request's own clock (no map entry exists for it). A
		 * healthy, fast completion ends here, after one read. */
		latency = now - start;
		known = true;
		if (!status) {
			if (!(cfg = tapio_config_get(TAPIO_FLAG_STORAGE)))
				return 0;
			slow_ns = cfg->sto_slow_io_ns;
			if (!slow_ns || latency < slow_ns)
				return 0;
		}
	}
	data_len = rq->__data_len;
	cmd_flags = rq->cmd_flags;
	op = cmd_flags & REQ_OP_MASK;
	sector = rq->__sector;
	partial = nr_bytes < data_len;
	if (!known && !own_clock(rq, op)) {
		f = bpf_map_lookup_elem(&inflight, &key);
		if (f) {
			/* Only the entry of this very request: a recycled request's
			 * stale entry has another op or sector, and is a counted
			 * drop (its own completion was lost), never a latency. */
			if (f->op == op && f->sector == sector) {
				ambiguous = f->flags & INFLIGHT_AMBIGUOUS;
				if (!ambiguous) {
					latency = now - f->issue_ns;
					known = true;
				}
				requeues = f->requeues;
			} else {
				ambiguous = true;
			}
			/* Values are copied out first: the delete frees the element. */
			if (partial && f->op == op && f->sector == sector)
				f->sector = sector + (nr_bytes >> 9);
			else
				bpf_map_delete_elem(&inflight, &key);
		}
	}

	if (!(cfg = tapio_config_get(TAPIO_FLAG_STORAGE)))
		return 0;
	if (ambiguous)
		tapio_stat_inc(TAPIO_STAT_CORR_DUP);
	else if (!known && (status || nr_bytes))
		tapio_stat_inc(TAPIO_STAT_CORR_MISSING);
	slow_ns = cfg->sto_slow_io_ns;
	if (!status && !(known && slow_ns && latency >= slow_ns))
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		tapio_stat_inc(TAPIO_STAT_RB_FULL);
		return 0;
	}
	tapio_hdr(&e->hdr, cfg, TAPIO_EV_STO_IO, sizeof(*e));
	if (known)
		flags |= TAPIO_STO_F_LATENCY;
	if (partial)
		flags |= TAPIO_STO_F_PARTIAL;
	e->latency_ns = known ? latency : 0;
	e->cmd_flags = cmd_flags;
	/* As the tracepoint reports them (blk_rq_trace_sector/_nr_sectors):
	 * driver-private requests and sector -1 (a flush) have none. */
	e->sector = (passthrough_op(op) || sector == (__u64)-1) ? 0 : sector;
	{
		struct gendisk *disk = rq->q->disk;
		__u32 major = 0, minor = 0;

		if (disk) {
			major = disk->major;
			minor = disk->first_minor;
		}
		e->dev = (major << MINORBITS) | minor;
	}
	e->nr_sectors = passthrough_op(op) ? 0 : data_len >> 9;
	e->bytes = nr_bytes;
	e->status = status;
	e->requeues = requeues;
	e->flags = flags;
	bpf_ringbuf_submit(e, tapio_rb_flags(&events, sizeof(*e), EVENTS_BYTES));
	return 0;
}
