// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Container observer: OOM kills and abnormal process exits.
 *
 * Facts this rests on (KERNEL-FACTS.md, checked on 6.18):
 *  - oom/mark_victim runs in the context of the task that hit the limit,
 *    not the victim: everything is read from the victim's task_struct
 *    (its tgid, comm, mm counters, cgroups), never from the current task;
 *  - the victim's later sched_process_exit shows SIGKILL: the victim is
 *    remembered (bounded LRU) so that exit is not reported a second time;
 *  - sched_process_exit fires once per thread in the exiting thread's
 *    context; since 6.16 its second argument group_dead marks the last
 *    thread out; task->exit_code is in wait(2) encoding;
 *  - memory cgroups may be v1 or v2: both keep the limit in
 *    mem_cgroup->memory.max (pages); PAGE_COUNTER_MAX means "no limit";
 *  - signal_generate runs in the context of whoever generated the signal:
 *    kill(2)/pidfd_send_signal (si_code SI_USER, 0) and tgkill (SI_TKILL,
 *    -6) from the sender; a fault (code > 0) from the faulting thread; an
 *    OOM kill (SI_KERNEL) from the task whose charge failed; abort() and
 *    the kernel's SIGPIPE from the target itself. A sender exists only
 *    when code <= 0 and the current tgid is not the target's.
 * The agent decides severity and formats; this program decides which exits
 * are facts worth a record (SPEC §1 scope rule) so a node where shell tools
 * exit 1 all day sends nothing.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tapio_common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_EXITING 0x00000004
#define PF_KTHREAD 0x00200000

#define SIGILL  4
#define SIGABRT 6
#define SIGBUS  7
#define SIGFPE  8
#define SIGKILL 9
#define SIGSEGV 11
#define SIGSYS  31

/* Ancestors searched for the effective memory limit. */
#define MEMCG_MAX_DEPTH 16

/* The ring's size; the wake-up mark is a quarter of it (tapio_rb_flags). */
#define EVENTS_BYTES (256 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
} events SEC(".maps");

/* tgid -> mark_victim time. An entry lives from the OOM kill to the
 * victim's last thread exiting; LRU so a victim whose exit we miss cannot
 * leak. It also makes a second mark_victim of the same process (it may be
 * marked again while it dies) report nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} oom_victims SEC(".maps");

/* (target tgid << 32 | signal) -> who sent it last, for the fatal signals
 * only (crash signals and SIGKILL): written where a signal is generated,
 * read once where a reported exit names that signal. A later kernel-raised
 * or self-sent signal of the same number deletes the entry (the exit's
 * signal is the last one generated). LRU: a signal that was handled and
 * never killed anyone ages out. */
struct signal_sender {
	__u64 cgroup_id;
	__u32 pid;
	__u32 _pad;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct signal_sender);
} signal_senders SEC(".maps");

static __always_inline __u64 task_cgroup2_id(struct task_struct *t)
{
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

static __always_inline struct mem_cgroup *css_memcg(struct cgroup_subsys_state *css)
{
	if (!css)
		return NULL;
	return (void *)css - bpf_core_field_offset(struct mem_cgroup, css);
}

static __always_inline struct mem_cgroup *task_memcg(struct task_struct *t)
{
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cs;
	int id;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return NULL;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	cs = BPF_CORE_READ(t, cgroups);
	if (!cs || id < 0)
		return NULL;
	bpf_core_read(&css, sizeof(css), &cs->subsys[id]);
	return css_memcg(css);
}

/* Fills the memcg fields: the memcg's own id and usage, and the smallest
 * max over it and its ancestors (the limit that actually applies). */
static __always_inline void fill_memcg(struct tapio_ctr_event *e, struct task_struct *t)
{
	struct mem_cgroup *m = task_memcg(t);
	__u64 best = ~0ULL;
	__u32 depth = 0;
	int i;

	if (!m)
		return;
	e->memcg_id = BPF_CORE_READ(m, css.cgroup, kn, id);
	e->memcg_usage_pages = BPF_CORE_READ(m, memory.usage.counter);
	for (i = 0; i < MEMCG_MAX_DEPTH && m; i++) {
		__u64 max = BPF_CORE_READ(m, memory.max);

		if (max < best) {
			best = max;
			depth = i;
		}
		m = css_memcg(BPF_CORE_READ(m, css.parent));
	}
	e->memcg_max_pages = best;
	e->memcg_limit_depth = depth;
	e->flags |= TAPIO_CTR_F_MEMCG;
}

/* pid of @t's thread-group leader in its own PID namespace, and whether
 * that namespace's init is on its way out (it is tearing the namespace
 * down: every other member gets SIGKILL from zap_pid_ns_processes). */
static __always_inline __u32 leader_ns_pid(struct task_struct *t, bool *ns_dying)
{
	struct task_struct *leader = BPF_CORE_READ(t, group_leader);
	struct pid *pid = BPF_CORE_READ(leader, thread_pid);
	struct task_struct *reaper;
	struct upid up = {};
	unsigned int level;

	*ns_dying = false;
	if (!pid)
		return 0;
	level = BPF_CORE_READ(pid, level);
	bpf_core_read(&up, sizeof(up), &pid->numbers[level]);
	reaper = BPF_CORE_READ(up.ns, child_reaper);
	if (reaper && reaper != leader && (BPF_CORE_READ(reaper, flags) & PF_EXITING))
		*ns_dying = true;
	return up.nr;
}

static __always_inline struct tapio_ctr_event *reserve(const struct tapio_config *cfg, __u16 kind)
{
	struct tapio_ctr_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		tapio_stat_inc(TAPIO_STAT_RB_FULL);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	tapio_hdr(&e->hdr, cfg, kind, sizeof(*e));
	return e;
}

/* Since 6.8 mark_victim gets (struct task_struct *task, uid_t uid); before
 * it got (int pid). Its uid field appeared with the task argument. */
SEC("tp_btf/mark_victim")
int handle_ctr__mark_victim(__u64 *ctx)
{
	struct task_struct *task = NULL;
	struct tapio_ctr_event *e;
	const struct tapio_config *cfg;
	__u64 now = bpf_ktime_get_ns();
	struct mm_struct *mm;
	bool dying;
	__u32 tgid;
	int live;

	if (bpf_core_field_exists(struct trace_event_raw_mark_victim, uid)) {
		task = (struct task_struct *)ctx[0];
		tgid = BPF_CORE_READ(task, tgid);
	} else {
		tgid = (__u32)ctx[0];
	}
	live = (cfg = tapio_config_get(TAPIO_FLAG_CONTAINER)) != NULL;
	/* Remember the victim whatever the config, so its SIGKILL exit is never
	 * reported as abnormal; NOEXIST: one report per victim. */
	if (bpf_map_update_elem(&oom_victims, &tgid, &now, BPF_NOEXIST))
		return 0;
	if (!live)
		return 0;
	e = reserve(cfg, TAPIO_EV_CTR_OOM);
	if (!e)
		return 0;
	e->pid = tgid;
	if (task) {
		e->tid = BPF_CORE_READ(task, pid);
		BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
		e->cgroup_id = task_cgroup2_id(task);
		e->ns_pid = leader_ns_pid(task, &dying);
		mm = BPF_CORE_READ(task, mm);
		if (mm) {
			/* What the tracepoint itself reports: percpu_counter_read
			 * of the mm's rss counters (MM_FILEPAGES 0, MM_ANONPAGES 1,
			 * MM_SHMEMPAGES 3), clamped at 0. */
			__s64 file = BPF_CORE_READ(mm, rss_stat[0].count);
			__s64 anon = BPF_CORE_READ(mm, rss_stat[1].count);
			__s64 shmem = BPF_CORE_READ(mm, rss_stat[3].count);

			e->file_rss_pages = file > 0 ? file : 0;
			e->anon_rss_pages = anon > 0 ? anon : 0;
			e->shmem_rss_pages = shmem > 0 ? shmem : 0;
			e->flags |= TAPIO_CTR_F_MM;
		}
		fill_memcg(e, task);
	}
	bpf_ringbuf_submit(e, tapio_rb_flags(&events, sizeof(*e), EVENTS_BYTES));
	return 0;
}

static __always_inline bool crash_signal(__u32 sig)
{
	switch (sig) {
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
	case SIGABRT:
	case SIGSYS:
	case SIGKILL:
		return true;
	}
	return false;
}

static __always_inline bool ignored_code(const struct tapio_config *cfg, __u32 code)
{
	__u32 n = cfg->ctr_ignore_exit_codes_count;
	int i;

	if (n > TAPIO_MAX_IGNORE_EXIT_CODES)
		n = TAPIO_MAX_IGNORE_EXIT_CODES;
	for (i = 0; i < TAPIO_MAX_IGNORE_EXIT_CODES; i++) {
		if (i >= n)
			break;
		if (cfg->ctr_ignore_exit_codes[i] == code)
			return true;
	}
	return false;
}

/* 6.16+: (struct task_struct *p, bool group_dead); before: (p) only, and
 * the last thread out is the one that finds signal->live at zero. */
SEC("tp_btf/sched_process_exit")
int handle_ctr__sched_process_exit(__u64 *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	struct tapio_ctr_event *e;
	const struct tapio_config *cfg;
	__u32 status, sig, tgid, ns_pid;
	bool group_dead, ns_dying;

	/* Cheapest filters first: a clean exit and all but the last thread.
	 * A direct load (tp_btf hands a trusted task pointer), not a probe
	 * read: this line is the whole cost of every healthy exit. */
	status = p->exit_code;
	if (!status)
		return 0;
	if (bpf_core_field_exists(struct trace_event_raw_sched_process_exit, group_dead))
		group_dead = (bool)ctx[1];
	else
		group_dead = BPF_CORE_READ(p, signal, live.counter) == 0;
	if (!group_dead)
		return 0;
	if (BPF_CORE_READ(p, flags) & PF_KTHREAD)
		return 0;

	/* An OOM victim is reported once, as oom_kill; forget it whatever the
	 * config so the map never holds an exited process. */
	tgid = BPF_CORE_READ(p, tgid);
	if (bpf_map_lookup_elem(&oom_victims, &tgid)) {
		bpf_map_delete_elem(&oom_victims, &tgid);
		return 0;
	}
	if (!(cfg = tapio_config_get(TAPIO_FLAG_CONTAINER)))
		return 0;

	ns_pid = leader_ns_pid(p, &ns_dying);
	sig = status & 0x7f;
	if (sig) {
		/* SIGTERM, SIGINT, SIGHUP, SIGPIPE, ...: asked to stop, not a crash. */
		if (!crash_signal(sig))
			return 0;
		/* Members of a PID namespace whose init died are killed by the
		 * kernel; the init's own exit is the fact. */
		if (sig == SIGKILL && ns_dying)
			return 0;
	} else {
		if (cfg->ctr_exit_scope != TAPIO_EXIT_SCOPE_ALL && ns_pid != 1)
			return 0;
		if (ignored_code(cfg, (status >> 8) & 0xff))
			return 0;
	}

	e = reserve(cfg, TAPIO_EV_CTR_EXIT);
	if (!e)
		return 0;
	e->pid = tgid;
	e->tid = BPF_CORE_READ(p, pid);
	/* comm goes with pid: the process's (its leader's), not the thread's. */
	BPF_CORE_READ_STR_INTO(&e->comm, p, group_leader, comm);
	e->cgroup_id = task_cgroup2_id(p);
	e->exit_status = status;
	e->ns_pid = ns_pid;
	if (ns_pid == 1)
		e->flags |= TAPIO_CTR_F_PIDNS_INIT;
	if (sig) {
		/* Only here, on a reported signal death: a healthy exit never
		 * pays for the lookup. */
		__u64 skey = (__u64)tgid << 32 | sig;
		struct signal_sender *s = bpf_map_lookup_elem(&signal_senders, &skey);

		if (s) {
			e->sender_pid = s->pid;
			e->sender_cgroup_id = s->cgroup_id;
			__builtin_memcpy(e->sender_comm, s->comm, sizeof(e->sender_comm));
			e->flags |= TAPIO_CTR_F_SENDER;
			bpf_map_delete_elem(&signal_senders, &skey);
		}
	}
	{
		struct mem_cgroup *m = task_memcg(p);

		if (m)
			e->memcg_id = BPF_CORE_READ(m, css.cgroup, kn, id);
	}
	bpf_ringbuf_submit(e, tapio_rb_flags(&events, sizeof(*e), EVENTS_BYTES));
	return 0;
}

#define SI_USER   0
#define SI_KERNEL 0x80
/* include/linux/sched/signal.h: pseudo siginfo pointers. */
#define SEND_SIG_NOINFO 0UL
#define SEND_SIG_PRIV   1UL

/* (sig, info, task, group, result) since 3.x; result since 3.12. */
SEC("tp_btf/signal_generate")
int BPF_PROG(handle_ctr__signal_generate, int sig, struct kernel_siginfo *info,
	     struct task_struct *task, int group, int result)
{
	struct signal_sender s = {};
	__u32 target, cur;
	__u64 key, id;
	int code;

	/* Cheapest filters first: only fatal signals that will be delivered
	 * (an already pending one keeps its first sender). */
	if (!crash_signal(sig) || result != TRACE_SIGNAL_DELIVERED)
		return 0;
	if ((unsigned long)info == SEND_SIG_NOINFO)
		code = SI_USER;
	else if ((unsigned long)info == SEND_SIG_PRIV)
		code = SI_KERNEL;
	else
		code = BPF_CORE_READ(info, si_code);
	target = BPF_CORE_READ(task, tgid);
	key = (__u64)target << 32 | (__u32)sig;
	id = bpf_get_current_pid_tgid();
	cur = id >> 32;
	/* Raised by the kernel (a fault, an OOM kill) or sent to itself
	 * (abort()): no sender, and no older sender of this signal applies. */
	if (code > 0 || cur == target) {
		bpf_map_delete_elem(&signal_senders, &key);
		return 0;
	}
	s.pid = cur;
	s.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	bpf_map_update_elem(&signal_senders, &key, &s, BPF_ANY);
	return 0;
}
