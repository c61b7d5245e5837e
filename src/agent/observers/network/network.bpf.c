// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Network observer: failed connects and why, peer resets, retransmits and
 * RTT samples.
 *
 * Facts this rests on (KERNEL-FACTS.md, checked on 6.18):
 *  - a connect runs CLOSE->SYN_SENT in the connecting process; the
 *    SYN_SENT->CLOSE of a refused or timed-out connect may run in softirq
 *    or timer context, so pid/comm are taken at CLOSE->SYN_SENT, keyed by
 *    the socket, and used at the close;
 *  - sk_err is already set when SYN_SENT->CLOSE fires: 111 refused (RST or
 *    ICMP port unreachable), 110 timed out, 113/101 unreachable, 0 when the
 *    application gave up itself (not an anomaly);
 *  - skc_num is 0 at both transitions of a failed connect; inet_sport still
 *    holds the source port at SYN_SENT->CLOSE;
 *  - a peer's RST runs tcp_receive_reset in the softirq of whoever
 *    delivered it (on loopback and veth: the peer's own close()), never the
 *    connector: pid/comm come from the owner map. Accepted sockets never go
 *    CLOSE->SYN_SENT, so they have no owner entry; an orphan (closed by its
 *    application) has SOCK_DEAD and no sk_socket. The local side's own
 *    abort fires no tcp_receive_reset at all;
 *  - a SYN dropped in the connector's own netns (OUTPUT) or a SYN-ACK
 *    dropped at its INPUT carries skb->sk = the SYN_SENT socket; a SYN
 *    dropped in the peer's netns has no socket and is tied by its 4-tuple.
 * Classification (windows, folding) happens in the agent; this program
 * decides what is a fact worth a record. The one rule judged here is RTT
 * degradation: every healthy connection's end is a baseline sample, and
 * sending each across the ring buffer cost more than the baseline itself,
 * so the per-destination baseline lives in rtt_baselines and only a
 * sample that qualifies becomes a record.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tapio_common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_DEAD_BIT 0 /* enum sock_flags SOCK_DEAD */
#define TCPHDR_SYN 0x02
#define TCPHDR_ACK 0x10
/* tcp_retransmit_skb's early exits (nothing sent, nothing counted). */
#define EAGAIN 11
#define ENOMEM 12
#define EBUSY 16
#define EINVAL 22
#define EHOSTUNREACH 113

/* The ring's size; the wake-up mark is a quarter of it (tapio_rb_flags). */
#define EVENTS_BYTES (512 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
} events SEC(".maps");

/*
 * Who opened a socket actively: set at CLOSE->SYN_SENT, read where the
 * connect resolves or the connection ends, released at its close.
 *
 * A set-associative table in an ARRAY, not a hash map: the socket pointer
 * picks one set of OWNER_WAYS slots (their tags fill two cache lines), a
 * slot is claimed with a compare-and-swap of its tag and released with an
 * exchange. No bucket lock, no allocation, no hashing of a key: an LRU
 * hash cost ~250 ns to insert and ~100 ns to delete per connection here,
 * most of the budget of a healthy one (BENCHMARKS.md). Socket-local
 * storage was tried too: its allocation per socket cost more than the
 * LRU insert.
 *
 * Exactness: a tag is the socket pointer itself and every socket that
 * went CLOSE->SYN_SENT passes ->CLOSE before it is freed (the tracepoint
 * is in tcp_set_state), so a slot never outlives its socket and a reused
 * pointer never finds a stale owner. The one exception is a ->CLOSE run
 * the kernel skipped because this program was already running on that CPU
 * (docs/KERNEL-FACTS.md, Attaching): the slot then stays claimed, a socket
 * later allocated at the same address finds that owner until it closes
 * (or takes the slot over at its own connect), and the skip is counted in
 * tapio_bpf_program_missed_runs_total. A full set (OWNER_WAYS live connects
 * hashing alike) leaves the new connect without an owner, as an evicted
 * LRU entry did (its failure then counts as owner missing). Accepted
 * sockets never go CLOSE->SYN_SENT, so they never have a slot.
 */
struct conn_owner {
	__u32 pid;
	__u32 tid;
	char comm[16];
	__u32 flags;    /* TAPIO_NET_F_RST */
	__s32 err;      /* error reported while in SYN_SENT (see below) */
	__u64 cgroup_id;
	__u64 err_ts;   /* when it was reported */
	__u32 drops;    /* its packets this kernel dropped while in SYN_SENT */
	__u32 drop_reason; /* skb_drop_reason of the first */
	__u64 flow_seq; /* flow_drop_seq when the connect started */
};

/* 1024 sets x 16 ways = 16384 sockets between connect and close (the LRU
 * map's capacity before). With L sockets live, a new connect finds its set
 * full with probability P(Poisson(L/1024) >= 16): ~4e-6 at L = 4000,
 * ~7e-3 at L = 8000 (8 ways x 2048 sets: 9e-4 and 5e-2, at the same
 * cost per connection within this machine's noise). The agent's map-fill
 * walk knows OWNER_WAYS (SET_TABLES in mod.rs next to this file). */
#define OWNER_WAYS 16
#define OWNER_SET_BITS 10

struct owner_set {
	__u64 sk[OWNER_WAYS]; /* the socket holding each slot, 0 = free */
	struct conn_owner o[OWNER_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << OWNER_SET_BITS);
	__type(key, __u32);
	__type(value, struct owner_set);
} conn_owners SEC(".maps");

static __always_inline struct owner_set *owner_set_of(struct sock *sk)
{
	/* Fibonacci hashing of the pointer's low 32 bits: the high bits of
	 * the product depend on all of them, so slab alignment does not
	 * matter. A 32-bit register copy is the one way the verifier lets a
	 * pointer become a number (no arithmetic on pointers; a privileged
	 * loader may leak them). Written as asm so the compiler cannot fold
	 * the copy into the multiply, which the verifier would refuse. */
	__u32 low, idx;

	asm volatile("%0 = %1" : "=w"(low) : "w"((__u32)(unsigned long)sk));
	idx = (low * 0x9E3779B1U) >> (32 - OWNER_SET_BITS);

	return bpf_map_lookup_elem(&conn_owners, &idx);
}

/* The owner of @sk and, in @tag, its slot's tag for the release. Inlined
 * and unrolled: as a subprogram it saved ~6 KB of object (and binary) but
 * cost ~40 ns per connection; as a plain loop ~50-100 ns. */
static __always_inline struct conn_owner *owner_find(struct sock *sk, __u64 **tag)
{
	struct owner_set *s = owner_set_of(sk);
	int i;

	if (!s)
		return NULL;
#pragma unroll
	for (i = 0; i < OWNER_WAYS; i++) {
		if (s->sk[i] == (__u64)sk) {
			*tag = &s->sk[i];
			return &s->o[i];
		}
	}
	return NULL;
}

static __always_inline struct conn_owner *owner_of(struct sock *sk)
{
	__u64 *tag;

	return owner_find(sk, &tag);
}

/* A slot for @sk's new connect: its own if it still holds one (never
 * expected, see above), else the first free one. NULL if the set is full. */
static __always_inline struct conn_owner *owner_claim(struct sock *sk)
{
	struct owner_set *s = owner_set_of(sk);
	int i;

	if (!s)
		return NULL;
#pragma unroll
	for (i = 0; i < OWNER_WAYS; i++)
		if (s->sk[i] == (__u64)sk)
			return &s->o[i];
#pragma unroll
	for (i = 0; i < OWNER_WAYS; i++)
		if (!s->sk[i] && !__sync_val_compare_and_swap(&s->sk[i], 0, (__u64)sk))
			return &s->o[i];
	return NULL;
}

/*
 * The few fields of the current task an owner needs, as CO-RE views of
 * the kernel's types (matched by name, offsets relocated at load): naming
 * struct task_struct itself would pull its whole type graph into the
 * object's BTF (~25 KB more object, and so binary).
 */
struct kernfs_node___own {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup___own {
	struct kernfs_node___own *kn;
} __attribute__((preserve_access_index));

struct css_set___own {
	struct cgroup___own *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct___own {
	int pid;
	int tgid;
	char comm[16];
	struct css_set___own *cgroups;
} __attribute__((preserve_access_index));

/* A destination within its network namespace (the agent's Dest). 8-aligned
 * so the table compares it as three words. */
struct rtt_dest {
	__u32 netns;
	__u16 family;
	__u16 dport;
	__u8 daddr[16];
} __attribute__((aligned(8)));

/* EWMA (alpha 1/8) of srtt samples, kept <<3 like tcp_sock.srtt_us so the
 * integer update loses no precision. Updated in place without a lock: two
 * CPUs closing connections to one destination at once may lose one
 * sample's update, which a baseline of many samples does not notice. */
struct rtt_base {
	__u32 ewma_us_x8;
	__u32 samples;
};

/*
 * Baselines per destination: a set-associative table in an ARRAY, like
 * conn_owners. A hash of the destination picks one set of RTT_WAYS slots;
 * a slot's tag is that hash (odd, so never 0 = free) and its key is
 * compared whole, so a baseline is only ever read for its own destination.
 * The LRU hash it replaces cost ~110 ns per healthy connection in lookup
 * alone (jhash, bucket walk, LRU bookkeeping; BENCHMARKS.md).
 *
 * A new destination takes a free slot by compare-and-swap of its tag; in a
 * full set it replaces a random one (the LRU evicted the least recently
 * used instead; with 1024 sets a set fills only when more than four busy
 * destinations hash alike). A replaced baseline starts over, so it judges
 * nothing until it has its minimum samples again: a lost judgement, never
 * a wrong one, and counted (TAPIO_STAT_RTT_FULL). As with the LRU map's reuse of evicted elements, a slot
 * replaced at the very moment another CPU reads it can hand that reader
 * the newcomer's first sample (samples = 1, below any minimum but 1).
 */
#define RTT_WAYS 4
#define RTT_SET_BITS 10

struct rtt_slot {
	struct rtt_dest d;
	struct rtt_base b;
};

struct rtt_set {
	__u64 tag[RTT_WAYS]; /* the destination's hash, 0 = free */
	struct rtt_slot s[RTT_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << RTT_SET_BITS);
	__type(key, __u32);
	__type(value, struct rtt_set);
} rtt_baselines SEC(".maps");

/*
 * tp_btf hands us trusted BTF pointers: plain field loads (CO-RE relocated
 * through vmlinux.h's preserve_access_index) instead of bpf_probe_read
 * calls, which is most of the per-run budget. inet_sock/tcp_sock fields
 * need the checked cast bpf_skc_to_tcp_sock (NULL for non-TCP sockets).
 */
/*
 * @sk's local and remote addresses into 16-byte fields the caller zeroed
 * (IPv4 in the first 4 bytes); returns the family.
 */
static __always_inline __u16 sock_addrs(struct sock *sk, __u8 *saddr, __u8 *daddr)
{
	__u16 family = sk->__sk_common.skc_family;

	if (family == AF_INET) {
		__u32 s = sk->__sk_common.skc_rcv_saddr;
		__u32 d = sk->__sk_common.skc_daddr;

		__builtin_memcpy(saddr, &s, 4);
		__builtin_memcpy(daddr, &d, 4);
	} else {
		__builtin_memcpy(saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	return family;
}

static __always_inline void fill_addrs(struct tapio_net_event *e, struct sock *sk,
				       struct tcp_sock *tp)
{
	__u16 sport = sk->__sk_common.skc_num;

	e->family = sock_addrs(sk, e->saddr, e->daddr);
	/* skc_num is already released on a failed connect's close. */
	if (!sport && tp)
		sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	e->sport = sport;
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
}

static __always_inline __u32 read_srtt_us(struct tcp_sock *tp)
{
	/* tcp_sock.srtt_us holds the smoothed RTT << 3. */
	return tp ? tp->srtt_us >> 3 : 0;
}

struct rtt_verdict {
	__u32 baseline_us;
	__u32 samples;
	bool spike;
};

/* Dropped SYNs / SYN-ACKs that had no socket attached (the peer's netns),
 * keyed by the connector's 4-tuple and its initial sequence number, so a
 * later connect that reuses the tuple never inherits them; read and
 * deleted at the connect's failure. LRU: drops of connects that succeed
 * or are not ours age out. */
struct flow_key {
	__u8 saddr[16]; /* the connector's address, IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;    /* host byte order */
	__u16 dport;
	__u16 family;
	__u16 _pad;
	__u32 isn;      /* the SYN's sequence number */
};

struct flow_drops {
	__u32 drops;
	__u32 reason;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, struct flow_drops);
} flow_drops SEC(".maps");

/* Bumped (after the map change) whenever a socketless drop is recorded in
 * flow_drops. A connect whose failure sees the value its start saw had no
 * such drop meanwhile, so it skips building the flow key and the lookup,
 * which every failed connect paid for and almost none needs. A named
 * one-entry array rather than a global: the agent and scripts/verify-lean.sh
 * name maps, and libbpf names a .bss map after the object's address. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} flow_drop_seq SEC(".maps");

static __always_inline __u64 *flow_seq(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&flow_drop_seq, &zero);
}

/* Per-kind facts beyond the common ones. */
struct net_extra {
	__u32 unacked;
	__u32 segs;
};

static __always_inline void emit(struct sock *sk, const struct tapio_config *cfg, __u16 kind,
				 struct conn_owner *owner, __s32 sk_err, __u32 state,
				 const struct rtt_verdict *rtt, const struct net_extra *x)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct tapio_net_event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		tapio_stat_inc(TAPIO_STAT_RB_FULL);
		return;
	}
	/* A connect failure is dated at its refusal, not the later close: no
	 * second clock read then. */
	if (owner && owner->err_ts && kind == TAPIO_EV_NET_CONNECT_FAIL) {
		e->hdr.ts_ns = owner->err_ts;
		e->hdr.generation = cfg->generation;
		e->hdr.kind = kind;
		e->hdr.size = sizeof(*e);
	} else {
		tapio_hdr(&e->hdr, cfg, kind, sizeof(*e));
	}
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	fill_addrs(e, sk, tp);
	if (owner) {
		e->pid = owner->pid;
		e->tid = owner->tid;
		__builtin_memcpy(e->comm, owner->comm, sizeof(e->comm));
		e->flags = (owner->flags & TAPIO_NET_F_RST) | TAPIO_NET_F_OWNER;
		e->cgroup_id = owner->cgroup_id;
	} else {
		e->cgroup_id = 0;
		e->pid = 0;
		e->tid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
		e->flags = 0;
	}
	e->sk_err = sk_err;
	e->srtt_us = read_srtt_us(tp);
	if (rtt) {
		e->rtt_baseline_us = rtt->baseline_us;
		e->rtt_samples = rtt->samples;
		if (rtt->spike)
			e->flags |= TAPIO_NET_F_RTT_SPIKE;
	} else {
		e->rtt_baseline_us = 0;
		e->rtt_samples = 0;
	}
	e->state = state;
	/* Destinations are per network namespace: 127.0.0.1:8080 in one pod
	 * is not 127.0.0.1:8080 in another. */
	e->netns = sk->__sk_common.skc_net.net->ns.inum;
	e->unacked = x ? x->unacked : 0;
	e->segs = x ? x->segs : 0;
	if (owner && kind == TAPIO_EV_NET_CONNECT_FAIL) {
		e->drops = owner->drops;
		e->drop_reason = owner->drop_reason;
	} else {
		e->drops = 0;
		e->drop_reason = 0;
	}
	bpf_ringbuf_submit(e, tapio_rb_flags(&events, sizeof(*e), EVENTS_BYTES));
}
/* The connector's 4-tuple of @sk, as flow_drops keys it. */
static __always_inline void sock_flow_key(struct flow_key *k, struct sock *sk, struct tcp_sock *tp)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = sock_addrs(sk, k->saddr, k->daddr);
	k->sport = tp ? bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport) : 0;
	k->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	/* Nothing was acknowledged in SYN_SENT: snd_una is still the ISN. */
	k->isn = tp ? tp->snd_una : 0;
}

/* Adds the socketless drops recorded for this connect to its owner entry. */
static __always_inline void take_flow_drops(struct sock *sk, struct conn_owner *owner)
{
	struct flow_drops *fd;
	struct flow_key k;
	__u64 *seq = flow_seq();

	if (seq && *seq == owner->flow_seq)
		return;
	sock_flow_key(&k, sk, bpf_skc_to_tcp_sock(sk));
	fd = bpf_map_lookup_elem(&flow_drops, &k);
	if (!fd)
		return;
	if (!owner->drops)
		owner->drop_reason = fd->reason;
	owner->drops += fd->drops;
	bpf_map_delete_elem(&flow_drops, &k);
}


/*
 * Judges one srtt sample of an actively opened connection against its
 * destination's baseline *before* folding it in (SPEC §1, RTT rule):
 * enough samples, srtt >= multiplier x baseline and srtt >= the absolute
 * floor. A new destination starts its baseline with this sample.
 */
static __always_inline void rtt_judge(struct sock *sk, const struct tapio_config *cfg,
				      __u32 srtt, struct rtt_verdict *v)
{
	struct rtt_dest d = {};
	const __u64 *w = (const __u64 *)&d;
	struct rtt_base *b = NULL;
	struct rtt_set *set;
	__u32 ewma, samples, min_samples, x8, idx;
	__u64 h;
	int i;

	d.netns = sk->__sk_common.skc_net.net->ns.inum;
	d.family = sk->__sk_common.skc_family;
	d.dport = sk->__sk_common.skc_dport;
	if (d.family == AF_INET) {
		__u32 a = sk->__sk_common.skc_daddr;

		__builtin_memcpy(d.daddr, &a, 4);
	} else {
		__builtin_memcpy(d.daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	/* Multiplicative mixing of the three words; the top bits pick the
	 * set, the whole (odd) value is the tag. */
	h = (w[0] ^ 0x9E3779B97F4A7C15ULL) * 0xBF58476D1CE4E5B9ULL;
	h = (h ^ w[1]) * 0x94D049BB133111EBULL;
	h = (h ^ w[2]) * 0x9E3779B97F4A7C15ULL;
	h ^= h >> 29;
	idx = h >> (64 - RTT_SET_BITS);
	h |= 1;
	set = bpf_map_lookup_elem(&rtt_baselines, &idx);
	if (!set)
		return;
#pragma unroll
	for (i = 0; i < RTT_WAYS; i++) {
		const __u64 *k = (const __u64 *)&set->s[i].d;

		if (set->tag[i] == h && k[0] == w[0] && k[1] == w[1] && k[2] == w[2]) {
			b = &set->s[i].b;
			break;
		}
	}
	if (!b) {
		struct rtt_slot *slot = NULL;

#pragma unroll
		for (i = 0; i < RTT_WAYS; i++) {
			if (!set->tag[i] && !__sync_val_compare_and_swap(&set->tag[i], 0, h)) {
				slot = &set->s[i];
				break;
			}
		}
		if (!slot) {
			tapio_stat_inc(TAPIO_STAT_RTT_FULL);
			i = bpf_get_prandom_u32() & (RTT_WAYS - 1);
			set->tag[i] = h;
			slot = &set->s[i];
		}
		slot->d = d;
		slot->b.ewma_us_x8 = srtt << 3;
		slot->b.samples = 1;
		return;
	}
	ewma = b->ewma_us_x8;
	samples = b->samples;
	min_samples = cfg->net_rtt_min_baseline_samples;
	if (!min_samples)
		min_samples = 1;
	v->baseline_us = (ewma + 4) >> 3;
	v->samples = samples;
	v->spike = samples >= min_samples && ewma &&
		   (__u64)srtt * 8000 >= (__u64)cfg->net_rtt_multiplier_permille * ewma &&
		   srtt >= cfg->net_rtt_abs_us;
	/* Unsigned halves: BPF has no signed division before cpu v4. */
	x8 = srtt << 3;
	b->ewma_us_x8 = x8 >= ewma ? ewma + ((x8 - ewma) >> 3) : ewma - ((ewma - x8) >> 3);
	if (samples != (__u32)-1)
		b->samples = samples + 1;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_net__inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	const struct tapio_config *cfg;
	struct conn_owner *owner;
	__u64 *tag = NULL;

	/* Cheapest filter first: only a connect's start and any close matter. */
	if (newstate != TCP_SYN_SENT && newstate != TCP_CLOSE)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;

	if (newstate == TCP_SYN_SENT) {
		struct task_struct___own *task;

		if (!tapio_config_get(TAPIO_FLAG_NETWORK))
			return 0;
		owner = owner_claim(sk);
		if (!owner) {
			/* A full set; its failure also counts as owner missing. */
			tapio_stat_inc(TAPIO_STAT_OWNER_FULL);
			return 0;
		}
		/* Direct loads from the current task (what the pid_tgid, comm
		 * and cgroup_id helpers read, without three helper calls;
		 * comm is kept NUL-padded by the kernel, as the helper pads). */
		task = (void *)bpf_get_current_task_btf();
		owner->pid = task->tgid;
		owner->tid = task->pid;
		__builtin_memcpy(owner->comm, task->comm, sizeof(owner->comm));
		owner->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
		owner->err = 0;
		owner->err_ts = 0;
		owner->drops = 0;
		owner->drop_reason = 0;
		{
			__u64 *seq = flow_seq();

			/* No seq map value (never): always look, as before. */
			owner->flow_seq = seq ? *seq : ~0ULL;
		}
		owner->flags = 0;
		return 0;
	}

	/* newstate == TCP_CLOSE: per-socket state is dropped whatever the config. */
	owner = owner_find(sk, &tag);
	if (oldstate == TCP_SYN_SENT) {
		__s32 err = sk->sk_err;

		/* An error the application already collected (SO_ERROR clears
		 * sk_err) before closing: take the one reported earlier. */
		if (!err && owner)
			err = owner->err;
		/* err == 0: the application abandoned its own connect. */
		if (err && (cfg = tapio_config_get(TAPIO_FLAG_NETWORK))) {
			if (!owner)
				tapio_stat_inc(TAPIO_STAT_OWNER_MISSING);
			else
				take_flow_drops(sk, owner);
			emit(sk, cfg, TAPIO_EV_NET_CONNECT_FAIL, owner, err, oldstate, NULL, NULL);
		}
	} else if (owner && oldstate != TCP_LISTEN &&
		   (cfg = tapio_config_get(TAPIO_FLAG_NETWORK))) {
		/* End of an actively opened connection: one RTT sample, a
		 * record only if it qualifies. */
		__u32 srtt = read_srtt_us(bpf_skc_to_tcp_sock(sk));
		struct rtt_verdict v = {};

		if (srtt) {
			rtt_judge(sk, cfg, srtt, &v);
			if (v.spike)
				emit(sk, cfg, TAPIO_EV_NET_RTT, owner, 0, oldstate, &v, NULL);
		}
	}
	/* Everything read from the slot is read: hand it back (a full
	 * barrier, so no read above can see another socket's claim). */
	if (owner)
		__sync_lock_test_and_set(tag, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(handle_net__tcp_receive_reset, struct sock *sk)
{
	struct net_extra x = {};
	struct conn_owner *owner;
	const struct tapio_config *cfg;
	struct tcp_sock *tp;
	__u8 state = sk->__sk_common.skc_state;

	/* Softirq context: never take the current task here. */
	owner = owner_of(sk);
	if (state == TCP_SYN_SENT) {
		/* A reset answering our SYN: "refused by RST". */
		if (owner)
			owner->flags |= TAPIO_NET_F_RST; /* sole writer of this bit */
		return 0;
	}
	if (!owner) {
		/* Accepted (inbound), or connected before we were live. */
		tapio_stat_inc(TAPIO_STAT_RESET_INBOUND);
		return 0;
	}
	/* The application closed it already: nobody will see the error. */
	if ((sk->__sk_common.skc_flags & (1UL << SOCK_DEAD_BIT)) || !sk->sk_socket) {
		tapio_stat_inc(TAPIO_STAT_RESET_ORPHAN);
		return 0;
	}
	if (!(cfg = tapio_config_get(TAPIO_FLAG_NETWORK)))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		__u32 nxt = tp->snd_nxt;

		x.unacked = nxt - tp->snd_una;
		/* A sent FIN takes a sequence number but is not data: after
		 * the application's shutdown the FIN is the last of write_seq. */
		if (x.unacked && nxt == tp->write_seq &&
		    (state == TCP_FIN_WAIT1 || state == TCP_CLOSING || state == TCP_LAST_ACK))
			x.unacked--;
	}
	emit(sk, cfg, TAPIO_EV_NET_RESET, owner, 0, state, NULL, &x);
	return 0;
}

/*
 * An ICMP error that arrives while the connecting task holds the socket
 * lock (loopback answers within the connect() call itself) is not a hard
 * sk_err: tcp_v4_err/tcp_v6_err queue it on sk_error_queue
 * (ip_icmp_error → sock_queue_err_skb, which reports it) and keep it in
 * sk_err_soft. The application collects it with SO_ERROR, which clears
 * sk_err_soft, and only then closes, so the close sees no error at all
 * (observed on 6.18). The queued skb carries the errno in its
 * sock_extended_err; read it at the report, while it is the newest entry.
 */
#define SO_EE_ORIGIN_ICMP 2
#define SO_EE_ORIGIN_ICMP6 3

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(handle_net__inet_sk_error_report, struct sock *sk)
{
	struct sock_exterr_skb *serr;
	struct conn_owner *owner;
	struct sk_buff *skb;
	__s32 err;
	__u8 origin;

	if (sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	owner = owner_of(sk);
	if (!owner)
		return 0;
	err = sk->sk_err;
	if (!err) {
		skb = BPF_CORE_READ(sk, sk_error_queue.prev);
		if (!skb || (void *)skb == (void *)&sk->sk_error_queue)
			return 0;
		serr = (struct sock_exterr_skb *)&skb->cb;
		origin = BPF_CORE_READ(serr, ee.ee_origin);
		if (origin != SO_EE_ORIGIN_ICMP && origin != SO_EE_ORIGIN_ICMP6)
			return 0;
		err = BPF_CORE_READ(serr, ee.ee_errno);
	}
	owner->err = err;
	owner->err_ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(handle_net__tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	const struct tapio_config *cfg;
	struct conn_owner *owner;
	struct rtt_verdict v = {};
	struct net_extra x = {};
	__u8 state = sk->__sk_common.skc_state;
	__u32 srtt;
	int err = 0;

	/* SYN retransmits belong to the connect's own outcome (timeout), not
	 * to a retransmit spike of an established connection. */
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV)
		return 0;
	/* Since 6.11 the tracepoint also fires for attempts that returned
	 * early, before anything was sent or counted in total_retrans. */
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb, err))
		err = (int)ctx[2];
	if (err == -EBUSY || err == -EAGAIN || err == -EINVAL || err == -EHOSTUNREACH ||
	    err == -ENOMEM)
		return 0;
	if (!(cfg = tapio_config_get(TAPIO_FLAG_NETWORK)))
		return 0;
	/* Segments, as total_retrans counts them (tcp_skb_pcount). */
	x.segs = BPF_CORE_READ((struct tcp_skb_cb *)&skb->cb, tcp_gso_segs);
	/* Timer context: the owner map, not the current task, names the process. */
	owner = owner_of(sk);
	/* A retransmit's srtt is an RTT sample too, of actively opened
	 * connections only (the baseline is the connector's view). */
	srtt = read_srtt_us(bpf_skc_to_tcp_sock(sk));
	if (owner && srtt)
		rtt_judge(sk, cfg, srtt, &v);
	emit(sk, cfg, TAPIO_EV_NET_RETRANSMIT, owner, 0, state, &v, &x);
	return 0;
}

/* Reads the connector's 4-tuple from a SYN or SYN-ACK's headers. */
static __always_inline bool skb_flow_key(struct flow_key *k, struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 ip[40], tcp[14], ver, proto;
	__u32 seq, ack;
	__u8 *src, *dst;
	__u16 sport, dport;
	int alen;

	if (!head || nh == (__u16)~0U || th == (__u16)~0U)
		return false;
	if (bpf_probe_read_kernel(ip, sizeof(ip), head + nh))
		return false;
	ver = ip[0] >> 4;
	if (ver == 4) {
		proto = ip[9];
		src = &ip[12];
		dst = &ip[16];
		alen = 4;
	} else if (ver == 6) {
		proto = ip[6];
		src = &ip[8];
		dst = &ip[24];
		alen = 16;
	} else {
		return false;
	}
	if (proto != IPPROTO_TCP)
		return false;
	if (bpf_probe_read_kernel(tcp, sizeof(tcp), head + th))
		return false;
	if (!(tcp[13] & TCPHDR_SYN))
		return false;
	sport = (__u16)tcp[0] << 8 | tcp[1];
	dport = (__u16)tcp[2] << 8 | tcp[3];
	seq = (__u32)tcp[4] << 24 | (__u32)tcp[5] << 16 | (__u32)tcp[6] << 8 | tcp[7];
	ack = (__u32)tcp[8] << 24 | (__u32)tcp[9] << 16 | (__u32)tcp[10] << 8 | tcp[11];
	__builtin_memset(k, 0, sizeof(*k));
	k->family = ver == 4 ? AF_INET : AF_INET6;
	/* A SYN goes connector -> peer carrying the ISN; a SYN-ACK comes
	 * back acknowledging ISN + 1. */
	if (tcp[13] & TCPHDR_ACK) {
		__u8 *t = src;

		src = dst;
		dst = t;
		k->sport = dport;
		k->dport = sport;
		k->isn = ack - 1;
	} else {
		k->sport = sport;
		k->dport = dport;
		k->isn = seq;
	}
	if (alen == 4) {
		__builtin_memcpy(k->saddr, src, 4);
		__builtin_memcpy(k->daddr, dst, 4);
	} else {
		__builtin_memcpy(k->saddr, src, 16);
		__builtin_memcpy(k->daddr, dst, 16);
	}
	return true;
}

/*
 * A packet this kernel dropped, in any network namespace. This is a hot
 * tracepoint: the reason is checked first (most frees on a busy node are
 * NOT_SPECIFIED bookkeeping), then only a socket in SYN_SENT with an owner
 * entry, or a socketless SYN/SYN-ACK, costs more than a compare.
 */
SEC("tp_btf/kfree_skb")
int handle_net__kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct conn_owner *owner;
	struct flow_drops *fd, n = {};
	struct flow_key k;
	struct sock *sk;
	__u32 reason;

	/* Before 5.17 the tracepoint has no reason (and no third argument):
	 * nothing here can name a drop then. */
	if (!bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	reason = (__u32)ctx[2];
	if (reason <= (__u32)bpf_core_enum_value(enum skb_drop_reason,
						  SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	/* A segment for a port with no socket: this host answers it with a
	 * RST, so a connect it ends is refused, not left to time out. Every
	 * refused connect makes one (the SYN), so it is filtered before any
	 * map work: it was most of the refused path's cost. */
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET) &&
	    reason == (__u32)bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET))
		return 0;
	sk = skb->sk;
	if (sk) {
		if (sk->__sk_common.skc_state != TCP_SYN_SENT)
			return 0;
		owner = owner_of(sk);
		if (!owner)
			return 0;
		if (!owner->drops)
			owner->drop_reason = reason;
		__sync_fetch_and_add(&owner->drops, 1);
		return 0;
	}
	if (!skb_flow_key(&k, skb))
		return 0;
	fd = bpf_map_lookup_elem(&flow_drops, &k);
	if (fd) {
		__sync_fetch_and_add(&fd->drops, 1);
	} else {
		n.drops = 1;
		n.reason = reason;
		bpf_map_update_elem(&flow_drops, &k, &n, BPF_NOEXIST);
	}
	/* After the change, so a close that sees the new value finds it. */
	{
		__u64 *seq = flow_seq();

		if (seq)
			__sync_fetch_and_add(seq, 1);
	}
	return 0;
}

