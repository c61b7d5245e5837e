/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one ABI between Tapio's BPF objects and the agent.
 *
 * The agent's Rust types and constants are generated from this file at build
 * time (bindgen, build.rs -> src/agent/abi.rs): struct tapio_x_y becomes
 * TapioXY, TAPIO_NAME becomes NAME, with every size and field offset
 * asserted at compile time; the sizes are asserted here too. No kernel
 * types, no pointers, no enums, no variable-length data: fixed-width
 * integers only, explicit padding (the Rust side refuses implicit padding).
 * Bump TAPIO_ABI_VERSION on any change of layout or meaning.
 */
#ifndef __TAPIO_ABI_H
#define __TAPIO_ABI_H

#define TAPIO_ABI_VERSION 4

/* tapio_config.flags: one bit per observer, TAPIO_FLAG_<NAME> at the place
 * of <name> in the agent's observer list (src/wire/anomaly.rs; checked when
 * the agent compiles). No bit ever means "disable". */
#define TAPIO_FLAG_NETWORK   (1U << 0)
#define TAPIO_FLAG_CONTAINER (1U << 1)
#define TAPIO_FLAG_STORAGE   (1U << 2)
#define TAPIO_FLAG_NODE      (1U << 3)

#define TAPIO_MAX_IGNORE_EXIT_CODES 16

/* tapio_config.ctr_exit_scope */
#define TAPIO_EXIT_SCOPE_INIT 0
#define TAPIO_EXIT_SCOPE_ALL  1

/*
 * Runtime configuration, one copy in a single-entry ARRAY map ("tapio_config")
 * per BPF object. All-zero (the map's state before the agent writes it) is
 * inert: programs emit nothing until abi_version and their flag are set.
 * It holds only what a BPF program reads; the thresholds judged in user
 * space (refusal and retransmit windows, the critical I/O latency, the node
 * sampler's) stay in the agent's CompiledConfig.
 */
struct tapio_config {
	__u32 abi_version;                 /* 0: TAPIO_ABI_VERSION, first, always */
	__u32 generation;                  /* 4: stamped into every event */
	__u32 flags;                       /* 8 */
	/* network: the RTT judgement (per-destination baselines in the kernel) */
	__u32 net_rtt_multiplier_permille; /* 12 */
	__u32 net_rtt_min_baseline_samples;/* 16 */
	__u32 net_rtt_abs_us;              /* 20 */
	/* container */
	__u32 ctr_exit_scope;              /* 24 */
	__u32 ctr_ignore_exit_codes_count; /* 28: written after the entries */
	__u32 ctr_ignore_exit_codes[TAPIO_MAX_IGNORE_EXIT_CODES]; /* 32 */
	/* storage */
	__u64 sto_slow_io_ns;              /* 96 */
};
_Static_assert(sizeof(struct tapio_config) == 104, "tapio_config size");

/*
 * Per-object counters in a PERCPU_ARRAY ("tapio_stats"), summed by the agent.
 */
#define TAPIO_STAT_CFG_ZERO       0 /* invocation while config is all-zero/unset */
#define TAPIO_STAT_CFG_ABI        1 /* invocation while abi_version is wrong */
#define TAPIO_STAT_RB_FULL        2 /* ring-buffer reserve failed: record lost */
#define TAPIO_STAT_OWNER_MISSING  3 /* net: close of a connect we never saw start */
/* storage: a completion whose request had been issued twice with no
 * requeue between; its latency cannot be judged (reason ambiguous_inflight_io) */
#define TAPIO_STAT_CORR_DUP       4
/* storage: a completion with no recorded issue (issued before the observer
 * was live, or its entry was evicted from the full inflight map) */
#define TAPIO_STAT_CORR_MISSING   5
/* net: a peer's RST reached a socket with no connect record: an accepted
 * (inbound) socket, or one connected before the observer was live;
 * exported as tapio_inbound_resets_total, never an occurrence */
#define TAPIO_STAT_RESET_INBOUND  6
/* net: a peer's RST reached an actively opened socket its application had
 * already closed (an orphan): the application sees nothing (reason
 * reset_after_close) */
#define TAPIO_STAT_RESET_ORPHAN   7
/* net: a connect found its owner set full (16 sockets already connecting
 * in the same set): it runs without an owner, so its failure carries no
 * pid and its end gives no RTT sample */
#define TAPIO_STAT_OWNER_FULL     8
/* net: a new destination found its RTT baseline set full (4 destinations
 * already learned in the same set) and replaced one: that destination's
 * baseline starts over (reason rtt_table_full) */
#define TAPIO_STAT_RTT_FULL       9
#define TAPIO_STAT_MAX            10

/* Event kinds (tapio_event_hdr.kind). */
#define TAPIO_EV_NET_CONNECT_FAIL 1
#define TAPIO_EV_NET_RETRANSMIT   2
#define TAPIO_EV_NET_RTT          3
#define TAPIO_EV_NET_RESET        4
#define TAPIO_EV_CTR_OOM          16
#define TAPIO_EV_CTR_EXIT         17
#define TAPIO_EV_STO_IO           32

/* Common header of every ring-buffer record. */
struct tapio_event_hdr {
	__u64 ts_ns;      /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 generation; /* tapio_config.generation that judged it */
	__u16 kind;       /* TAPIO_EV_* */
	__u16 size;       /* sizeof the whole record */
};
_Static_assert(sizeof(struct tapio_event_hdr) == 16, "tapio_event_hdr size");

/* tapio_net_event.flags */
#define TAPIO_NET_F_RST   (1U << 0) /* tcp_receive_reset seen during SYN_SENT */
#define TAPIO_NET_F_OWNER (1U << 1) /* pid/comm are the connecting process */
/* srtt_us qualified as an RTT degradation against rtt_baseline_us, judged in
 * the kernel before the sample was folded into the baseline */
#define TAPIO_NET_F_RTT_SPIKE (1U << 2)

struct tapio_net_event {
	struct tapio_event_hdr hdr; /* 0 */
	__u32 pid;                  /* 16: tgid of the owner, 0 if unknown */
	__u32 tid;                  /* 20 */
	char comm[16];              /* 24 */
	__u8 saddr[16];             /* 40: IPv4 in the first 4 bytes */
	__u8 daddr[16];             /* 56 */
	__u16 family;               /* 72: AF_INET (2) or AF_INET6 (10) */
	__u16 sport;                /* 74: host byte order */
	__u16 dport;                /* 76: host byte order */
	__u16 flags;                /* 78: TAPIO_NET_F_* */
	__s32 sk_err;               /* 80: socket error at the transition */
	__u32 srtt_us;              /* 84: smoothed RTT in µs (kernel stores <<3) */
	__u32 state;                /* 88: TCP state when it happened */
	__u32 netns;                /* 92: network namespace inode of the socket */
	__u64 cgroup_id;            /* 96: cgroup2 id of the owner, 0 if unknown */
	__u32 rtt_baseline_us;      /* 104: the destination's baseline srtt before this sample */
	__u32 rtt_samples;          /* 108: samples in that baseline */
	__u32 unacked;              /* 112: reset: data bytes sent and not acknowledged */
	__u32 segs;                 /* 116: retransmit: segments it carried (tcp_skb_pcount) */
	__u32 drops;                /* 120: connect fail: its packets this kernel dropped */
	__u32 drop_reason;          /* 124: skb_drop_reason of the first of them (kernel's numbering) */
};
_Static_assert(sizeof(struct tapio_net_event) == 128, "tapio_net_event size");

/* tapio_ctr_event.flags */
#define TAPIO_CTR_F_PIDNS_INIT (1U << 0) /* the thread-group leader is pid 1 of its PID namespace */
#define TAPIO_CTR_F_MEMCG      (1U << 1) /* memcg_* fields were read from the victim's memcg */
#define TAPIO_CTR_F_MM         (1U << 2) /* rss fields were read from the victim's mm */
#define TAPIO_CTR_F_SENDER     (1U << 3) /* sender_* name the process that sent the fatal signal */

/*
 * Container facts: an OOM victim chosen (TAPIO_EV_CTR_OOM, at oom/mark_victim)
 * or the last thread of a process exiting abnormally (TAPIO_EV_CTR_EXIT).
 * Page counts are in the kernel's pages; the agent multiplies by its page size.
 */
struct tapio_ctr_event {
	struct tapio_event_hdr hdr; /* 0 */
	__u32 pid;                  /* 16: tgid (init PID namespace) */
	__u32 tid;                  /* 20: the thread (exit: the last one out) */
	char comm[16];              /* 24 */
	__u64 cgroup_id;            /* 40: cgroup2 id (kernfs id) of the task */
	__u64 memcg_id;             /* 48: kernfs id of its memory cgroup, 0 if none */
	__u32 exit_status;          /* 56: task->exit_code, wait(2) encoding (exit) */
	__u32 flags;                /* 60: TAPIO_CTR_F_* */
	__u32 ns_pid;               /* 64: leader's pid in its own PID namespace */
	__u32 memcg_limit_depth;    /* 68: 0 = the limit is the memcg's own, n = n-th ancestor */
	__u64 anon_rss_pages;       /* 72: oom: as the mark_victim tracepoint reports them */
	__u64 file_rss_pages;       /* 80 */
	__u64 shmem_rss_pages;      /* 88 */
	__u64 memcg_usage_pages;    /* 96: page_counter usage of the victim's memcg */
	__u64 memcg_max_pages;      /* 104: smallest max over the memcg and its ancestors */
	__u64 sender_cgroup_id;     /* 112: exit: cgroup2 id of the signal's sender */
	__u32 sender_pid;           /* 120: exit: tgid of the process that sent the signal */
	__u32 _pad;                 /* 124 */
	char sender_comm[16];       /* 128 */
};
_Static_assert(sizeof(struct tapio_ctr_event) == 144, "tapio_ctr_event size");

/* tapio_sto_event.flags */
#define TAPIO_STO_F_LATENCY (1U << 0) /* latency_ns is an exact issue->completion time */
#define TAPIO_STO_F_PARTIAL (1U << 1) /* a partial completion; the request goes on */

/*
 * A block request completion worth reporting: an error, or latency at or
 * above tapio_config.sto_slow_io_ns. Keyed to its issue by the request.
 */
struct tapio_sto_event {
	struct tapio_event_hdr hdr; /* 0 */
	__u64 latency_ns;           /* 16: last issue -> this completion; 0 unless F_LATENCY */
	__u64 sector;               /* 24: first sector, relative to the whole disk */
	__u32 dev;                  /* 32: disk dev_t, major << 20 | minor */
	__u32 nr_sectors;           /* 36: sectors left in the request at completion */
	__u32 bytes;                /* 40: bytes this completion covers */
	__u32 cmd_flags;            /* 44: REQ_OP in the low 8 bits */
	__u32 status;               /* 48: blk_status_t, 0 = success */
	__u16 requeues;             /* 52: requeues seen while inflight */
	__u16 flags;                /* 54: TAPIO_STO_F_* */
};
_Static_assert(sizeof(struct tapio_sto_event) == 56, "tapio_sto_event size");

#endif /* __TAPIO_ABI_H */
