"""MerPO's meta-training loop (Alg. 2 lines 9-18) for S random seeds at once.

``merpo-agent train --seeds 0-4`` (and every single run: S = 1) trains the seeds of one
setting in one process, each into its own run directory (``seeds.seed_run_dir``), each
ending with exactly the checkpoints and meta-test returns it has trained alone:

- Setup, looped over the seeds (``MetaTrainer.open_run``): each seed builds its modules
  from its own seed, then runs Alg. 2's setup (lines 1-8: meta-model, task models,
  behavior clones; ``--setup-cache``) or resumes its checkpoint, one seed after another.
  The setup runs once per run and its batched ops already span the tasks, so batching it
  over the seeds would gain little; the seeds share one pair of task samplers.
- Training, batched (:class:`_Stack`): the seeds' learner tables and task models are
  stacked along their task axis (seed s's tasks at rows s N .. s N + N - 1), pi_c
  and Q_meta into modules with a seed axis, and every meta-iteration runs the J RAC updates
  of all S x B task slots (seed-major) as one set of batched ops: every random tensor is
  drawn seed by seed from the seed's own generators (``task_slice.SeedGenerators``), every
  reduction over tasks (Eq. 10's mean, the meta-Q mean, a shared beta) is per seed, and
  the Eq. 10 step, the meta-Q step and the Reptile step update every seed's pi_c and
  Q_meta in one op each. Each seed's rows compute exactly what they compute alone (on the
  CPU with one torch thread, what ``reproduce`` and ``tune`` use; see
  ``merpo_data.networks`` for the element-wise ops that run seed by seed).
- Writing, per seed: metrics, checkpoints and meta-tests at the seed's own cadence (the
  same for every seed), each seed's state cut out of the stack first, with the global
  random state it has alone (``own_rng``: kept per seed, and only a seed's own steps
  draw from it), so a seed's checkpoint is the one it writes alone, and a killed batch
  resumes every seed exactly.

Where a CPU runs smaller batched ops faster (``task_slice.task_chunk_size``), the seeds
run in groups of whole seeds, or one by one in the task chunks a seed alone uses. A seed
whose loss turns NaN stops as it stops alone (its last good checkpoint kept; it writes
nothing more); the others train on, and the batch ends with :class:`TrainingDiverged`
naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from merpo_data.networks import set_seed_block
from merpo_data.progress import progress_bar

from merpo_agent.checkpoint import rng_state, set_rng_state
from merpo_agent.config import ConfigError
from merpo_agent.evaluation import MetaTestResult
from merpo_agent.learner_table import LearnerTable
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.overrides import flatten
from merpo_agent.rac_loop import TaskData, buffer_capacity, rac_updates
from merpo_agent.run_dir import claim_run_dir
from merpo_agent.run_layout import WATCHED, TrainingDiverged
from merpo_agent.seeds import StackedView, optimizer_state_like, stack_state, unstack_state
from merpo_agent.task_learners import TaskLearners
from merpo_agent.task_slice import SeedGenerators, TaskSlice, task_chunk_size


class SeedBatch:
    """Alg. 2 for the seeds ``members`` (``trainer.MetaTrainer`` s of one setting, one per
    seed and run directory): ``SeedBatch(members).train()`` -> each seed's final meta-test."""

    def __init__(self, members: list, progress: bool = True,
                 say: Callable[[str], None] | None = None):
        if not members:
            raise ConfigError("SeedBatch: no seeds to train")
        first = members[0]
        seeds = [m.cfg.seed for m in members]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds {seeds}: each seed once")
        if len(members) > 1:
            if first.world_size > 1:
                raise ConfigError("--seeds trains several seeds in one process; under "
                                  "torchrun train one --seed per launch")
            base = _without_seed(first.cfg)
            for m in members[1:]:
                if _without_seed(m.cfg) != base:
                    raise ConfigError(f"the seeds of a batch share every setting but the "
                                      f"seed; {m.run_dir} differs from {first.run_dir}")
        self.members = members
        self.progress = progress and first.is_main
        self.say = say or first.say

    def train(self) -> list[MetaTestResult]:
        """Set up or resume every seed, train them together, write each seed's run."""
        diverged: dict[int, str] = {}  # id(member) -> its one line
        with contextlib.ExitStack() as stack:
            for m in self.members:
                stack.enter_context(claim_run_dir(m.run_dir, m.checkpoint_path,
                                                  lock=m.is_main))
            writers = {}
            for m in self.members:  # one after another, each with its own random state
                if m is not self.members[0]:
                    m.shared_data = self.members[0].shared_data
                writers[id(m)] = stack.enter_context(_closing(m.open_run()))
                m.rng = rng_state()
            pending = [m for m in self.members if m.iteration < m.cfg.iterations]
            while pending:  # seeds that stand at another iteration: one batch after another
                at = min(m.iteration for m in pending)
                group = [m for m in pending if m.iteration == at]
                diverged.update(_Stack(group, writers, self.progress, self.say).run())
                pending = [m for m in pending if m.iteration < m.cfg.iterations]
            for m in self.members:
                if id(m) not in diverged:
                    with own_rng(m):
                        m.finish(writers[id(m)])
        if diverged:
            raise TrainingDiverged("; ".join(diverged.values()))
        return [m.last_result for m in self.members]


@contextlib.contextmanager
def own_rng(member):
    """The global random state ``member`` has alone around a step of its own (a save, a
    meta-test), kept for it afterwards."""
    set_rng_state(member.rng)
    try:
        yield
    finally:
        member.rng = rng_state()


@contextlib.contextmanager
def _closing(writer):
    try:
        yield writer
    finally:
        writer.close()


def _without_seed(cfg) -> dict:
    return {k: v for k, v in flatten(cfg.to_dict()).items() if k != "seed"}


def _slot_sums(module: torch.nn.Module, seeds: int) -> list[list[torch.Tensor]]:
    """Per seed block of the slots, each parameter of a stacked module summed over the
    block's slots, (1, ...) each: as a seed alone sums its own."""
    params = [p.detach() for p in module.parameters()]
    return [[p.chunk(seeds)[s].sum(0, keepdim=True) for p in params] for s in range(seeds)]


def _seed_means(sums: list[list[list[torch.Tensor]]], count: int) -> list[torch.Tensor]:
    """Each seed's mean parameters (its chunks' :func:`_slot_sums` summed in order, over its
    ``count`` tasks), stacked over the seeds: (S, ...) each."""
    means = [[sum(parts) / count for parts in zip(*chunks, strict=True)] for chunks in sums]
    return [torch.cat(per_param) for per_param in zip(*means, strict=True)]


class _Stack:
    """The training state of seeds that stand at the same meta-iteration, stacked (one seed:
    its own modules, nothing copied), and the loop over their remaining meta-iterations."""

    def __init__(self, members: list, writers: dict, progress: bool,
                 say: Callable[[str], None]):
        self.members, self.writers, self.say = members, writers, say
        self.progress = progress
        first = members[0]
        self.cfg, self.device = first.cfg, first.device
        self.count = len(members)
        self.num_train, self.batch_size = first.num_train, first.batch_size
        self.train_data = first.train_data
        rac, obs_dim, act_dim = self.cfg.rac, self.train_data.obs_dim, self.train_data.act_dim
        if self.count == 1:
            self.table, self.meta, self.task_models = first.table, first.meta, first.task_models
        else:
            n = self.count * self.num_train
            with torch.random.fork_rng(devices=_cuda(self.device)):  # seeds' RNG untouched
                self.table = LearnerTable(TaskLearners(rac, obs_dim, act_dim, n, self.device))
                self.meta = MetaLearner(rac, obs_dim, act_dim, self.device, seeds=self.count)
                self.task_models = first.task_models.empty_like(n)
            self._stack_members()
        self.groups = self._groups()
        self._chunk_state: dict[tuple[int, int], tuple] = {}
        # non-finite loss flags per seed, accumulated on the device, read once per log
        self.bad = torch.zeros(self.count, dtype=torch.bool, device=self.device)
        self.stopped: dict[int, str] = {}  # the seeds that diverged: id(member) -> line

    # ------------------------------------------------------------------ stacking
    def _stack_members(self) -> None:
        members = self.members
        self.task_models.load_state_dict(stack_state(
            self.task_models.state_dict(), [m.task_models.state_dict() for m in members]))
        self.table.load_training_state(stack_state(
            self.table.training_state(), [m.table.training_state() for m in members]))
        meta = [m.meta.training_state() for m in members]
        own = {"module": self.meta.state_dict(), "policy_optimizer": optimizer_state_like(
            self.meta.policy_optimizer, meta[0]["policy_optimizer"])}
        self.meta.load_training_state(stack_state(own, meta))

    def sync(self) -> None:
        """Cut each seed's learner table and meta-learner out of the stack into its own
        modules (what it saves and meta-tests)."""
        if self.count == 1:
            return
        table, meta = self.table.training_state(), self.meta.training_state()
        for s, m in enumerate(self.members):
            like = m.table.training_state()
            m.table.load_training_state(unstack_state(table, self.count, s, like))
            like = {"module": m.meta.state_dict(), "policy_optimizer": optimizer_state_like(
                m.meta.policy_optimizer, meta["policy_optimizer"])}
            m.meta.load_training_state(unstack_state(meta, self.count, s, like))

    # ------------------------------------------------------------------ groups and chunks
    def _groups(self) -> list[tuple[int, int, list[TaskSlice | None]]]:
        """``(first seed, last seed + 1, chunks)``: the seeds whose slots run as one set of
        batched ops, and the chunks of their task batch. Where a seed alone runs its batch
        in one op, whole seeds go together (as many as ``task_chunk_size`` lets a CPU run
        faster batched); where it cuts its batch into chunks, each seed runs alone, in
        those chunks."""
        chunks = self.members[0].chunks
        if chunks != [None]:
            return [(s, s + 1, chunks) for s in range(self.count)]
        b = self.batch_size
        slots = task_chunk_size(self.cfg, self.device, self.count * b,
                                self.train_data.obs_dim, self.train_data.act_dim)
        if self.cfg.rac.beta_sharing == "shared":
            slots = self.count * b  # each seed's one beta: its tasks step it in one op
        per = max(1, slots // b)
        return [(a, min(a + per, self.count), [None]) for a in range(0, self.count, per)]

    def _chunk_modules(self, first: int, seeds: int, size: int) -> tuple:
        """(learners, model buffer, slot models) for ``size`` slots of ``seeds`` seeds from
        seed ``first`` on: one seed's are its own (``MetaTrainer._chunk_modules``)."""
        if seeds == 1:
            return self.members[first]._chunk_modules(size)
        key = (seeds, size)
        if key not in self._chunk_state:
            cfg, train = self.cfg, self.train_data
            with torch.random.fork_rng(devices=_cuda(self.device)):
                learners = TaskLearners(cfg.rac, train.obs_dim, train.act_dim, size,
                                        self.device, action_log_scale=self.members[0]
                                        .action_log_scale, seeds=seeds)
                models = self.task_models.empty_like(size, seeds=seeds)
            buffer = (ModelBuffer(size, buffer_capacity(cfg.meta.inner_steps, cfg.rollout),
                                  train.obs_dim, train.act_dim, self.device)
                      if cfg.rac.use_model else None)
            self._chunk_state[key] = (learners, buffer, models)
        return self._chunk_state[key]

    def _generators(self, first: int, stop: int, name: str):
        gens = [getattr(m, name) for m in self.members[first:stop]]
        return gens[0] if len(gens) == 1 else SeedGenerators(gens)

    def _meta_networks(self, first: int, stop: int) -> tuple:
        """pi_c and Q_meta of seeds ``[first, stop)``: the stacked modules, or their rows."""
        if stop - first == self.count:
            return self.meta.policy, self.meta.q
        return (StackedView.rows(self.meta.policy, first, stop),
                StackedView.rows(self.meta.q, first, stop))

    def _behavior_clones(self, first: int, rows: list[torch.Tensor]):
        """pi_hat_beta of the tasks ``rows`` of each seed from ``first`` on (its positions in
        its own table), for the lambda dual: each seed selects its own
        (``BehaviorCloning.select``, which draws fresh weights from the global random
        state: the seed's own, as alone), then they run as one stack."""
        selected = []
        for m, seed_rows in zip(self.members[first:], rows, strict=False):
            with own_rng(m):
                selected.append(m.bc_train.select(seed_rows))
        if len(selected) == 1:
            return selected[0]
        set_seed_block(selected[0], rows[0].shape[0])  # the stack's layout: each seed's rows
        return StackedView.cat(selected)

    # ------------------------------------------------------------------ one meta-iteration
    def meta_iteration(self) -> list[dict[str, torch.Tensor]]:
        """Alg. 2 lines 10-17 for every seed's task batch; each seed's device metrics (no
        host reads).

        Within a group the seeds' slots are one set of batched ops; a seed that runs its
        batch in chunks draws the whole batch's randomness for every chunk from the same
        generator states and keeps its own rows, as it does alone."""
        cfg, members = self.cfg, self.members
        rac, b, n = cfg.rac, self.batch_size, self.num_train
        # each seed's task batch (line 10), the same on every rank under torchrun
        idx = [torch.randperm(n, device=self.device, generator=m.generator)[:b]
               for m in members]
        rows = [i if s == 0 else i + s * n for s, i in enumerate(idx)]  # in the stack
        regularized = rac.use_meta_regularizer
        learned = not cfg.meta.fixed_meta_policy  # single-task RAC: pi_c stays fixed
        tuned = regularized and rac.auto_tune_lambda
        # App. A.2.2's reading: the batch's learners start from pi_c and Q_meta every time
        reinit = learned and cfg.meta.learner_init in ("reinit", "reptile")
        reptile = learned and cfg.meta.learner_init == "reptile"
        seed_parts: list[list[dict[str, torch.Tensor]]] = [[] for _ in members]
        policy_inputs: list[tuple[torch.Tensor, ...]] = []
        critic_sums: list[list] = [[] for _ in members]
        actor_sums: list[list] = [[] for _ in members]
        for first, stop, chunks in self.groups:
            k = stop - first
            gen = self._generators(first, stop, "generator")
            learner_gen = self._generators(first, stop, "learner_generator")
            batch_idx = idx[first] if k == 1 else torch.cat(idx[first:stop])
            batch_rows = rows[first] if k == 1 else torch.cat(rows[first:stop])
            meta_policy, meta_q = self._meta_networks(first, stop)
            bad = self.bad[first:stop]

            def watch(metrics: dict[str, torch.Tensor], bad=bad, k=k) -> None:
                for name in WATCHED:
                    bad |= ~torch.isfinite(metrics[name]).view(k, -1).all(1)

            rewind = len(chunks) > 1
            if rewind:
                start = (gen.get_state(), learner_gen.get_state())
            for chunk in chunks:
                if rewind:
                    gen.set_state(start[0])
                    learner_gen.set_state(start[1])
                chunk_rows = batch_rows if chunk is None else chunk.take(batch_rows)
                learners, buffer, models = self._chunk_modules(first, k, chunk_rows.shape[0])
                learners.generator = learner_gen
                self.table.gather_into(learners, chunk_rows)  # each task continues its own
                if reinit:
                    learners.load_meta_networks(meta_policy, meta_q, fresh_adam=True)
                if buffer is not None:
                    buffer.clear()
                    models.copy_from_(self.task_models, chunk_rows)
                data = TaskData(self.train_data, batch_idx, models if rac.use_model else None,
                                members[0].info.terminated_torch, task_slice=chunk)
                own_rows = idx[first:stop] if chunk is None else [chunk.take(idx[first])]
                metrics, last = rac_updates(
                    learners, data, buffer, cfg.meta.inner_steps, cfg.rollout,
                    meta_policy if regularized else None,
                    self._behavior_clones(first, own_rows) if tuned else None, gen,
                    on_update=watch,
                )
                if regularized and learned:  # Eq. 10's inputs: pi_n at rho_n's states
                    with torch.no_grad():
                        mean, log_std = learners.actor(last.observations)
                    policy_inputs.append((mean, log_std, last.observations,
                                          learners.lam.detach().clone(),
                                          learners.alpha.clone()))
                for s, sums in enumerate(_slot_sums(learners.critic, k) if learned else []):
                    critic_sums[first + s].append(sums)
                for s, sums in enumerate(_slot_sums(learners.actor, k) if reptile else []):
                    actor_sums[first + s].append(sums)
                metrics = dict(metrics)
                metrics["alpha"] = learners.adapt_alpha(metrics["d_beta_dual"],
                                                        metrics["d_meta"])
                self.table.scatter_from(learners, chunk_rows)
                for s in range(k):
                    seed_parts[first + s].append(
                        {name: value.chunk(k)[s] for name, value in metrics.items()})
            if rac.beta_sharing == "shared":  # each seed's one dual, sampled or not
                log_beta = self.table.learners.log_beta
                with torch.no_grad():
                    for s in range(first, stop):
                        own = log_beta[s * n:(s + 1) * n]
                        own.copy_(learners.log_beta[(s - first) * b].expand_as(own))
        out = [{name: torch.cat([part[name] for part in parts]) for name in parts[0]}
               for parts in seed_parts]
        if policy_inputs and cfg.meta.policy_steps > 0:  # Eq. 10: only the KL depends on pi_c
            mean, log_std, states, lam, alpha = (torch.cat(x) for x in zip(*policy_inputs,
                                                                         strict=True))
            losses = [self.meta.update_policy_from(mean, log_std, states, lam, alpha)
                      for _ in range(cfg.meta.policy_steps)]
            for s, metrics in enumerate(out):
                metrics["meta_policy_loss"] = losses[0][s]  # before the first step
            self.bad |= ~torch.isfinite(losses[-1])
        count = members[0].num_slots
        if reptile:  # pi_c <- pi_c + epsilon (mean_n pi_n - pi_c)
            self.meta.reptile_policy_step(_seed_means(actor_sums, count), count,
                                          cfg.meta.reptile_step)
        if learned:
            self.meta.update_q_towards(_seed_means(critic_sums, count), count)
        first = members[0]
        if first.task_slice is not None:
            self.table.merge_ranks_(idx[0], first.task_slice.take(idx[0]))
        return out

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[int, str]:
        """The remaining meta-iterations; returns the seeds that diverged (id(member) ->
        its line). A diverged seed writes nothing more (its last good checkpoint stays, as
        alone) while it rides along to the end: the others' values never meet its own."""
        cfg, meta_cfg = self.cfg, self.cfg.meta
        members = self.members
        label = "meta-training" if self.count == 1 else f"meta-training {self.count} seeds"
        bar = progress_bar(cfg.iterations, label, "it", initial=members[0].iteration,
                           disable=not self.progress)
        try:
            while members[0].iteration < cfg.iterations:
                metrics = self.meta_iteration()
                k = members[0].iteration + 1
                for m in members:
                    m.iteration = k
                final = k == cfg.iterations
                log_now = k % cfg.log_every_iterations == 0 or final
                save_now = k % cfg.checkpoint_every_iterations == 0 or final
                eval_now = (cfg.eval_every_iterations > 0
                            and k % cfg.eval_every_iterations == 0) or final
                if log_now or save_now or eval_now:
                    self._check()
                if eval_now or save_now:
                    self.sync()
                for s, m in enumerate(members):
                    if id(m) in self.stopped:
                        continue
                    writer = self.writers[id(m)]
                    if log_now:
                        writer.log(k, "train", m._gather_metrics(metrics[s]))
                    with own_rng(m):
                        if eval_now and meta_cfg.fixed_meta_policy and m.is_main:
                            writer.log_record(m.own_task_record())
                        if eval_now:
                            result = m.evaluate(final=final)
                            means = result.means()
                            writer.log(k, "meta_test", means)
                            writer.log_record(result.per_task_record())
                            if final:
                                m.save_adapted(result)
                            bar.set_postfix(test_return=f"{means['adapted_return']:.2f}",
                                            meta=f"{means['meta_policy_return']:.2f}")
                if save_now:
                    self._save()
                bar.update(1)
        finally:
            bar.close()
        return self.stopped

    def _check(self) -> None:
        """The one host read of the non-finite flags (under torchrun all ranks stop
        together): a seed that diverged is stopped (one run: its one line is raised)."""
        from merpo_agent.distributed import any_rank

        if self.count == 1:
            bad = [bool(any_rank(self.bad[0]))]
        else:
            bad = self.bad.tolist()
        for m, is_bad in zip(self.members, bad, strict=True):
            if is_bad:
                self._stop(m, str(m._diverged("non-finite loss (NaN or inf)")))

    def _save(self) -> None:
        for m in self.members:
            if id(m) in self.stopped:
                continue
            with own_rng(m):
                try:
                    m.save()
                except TrainingDiverged as err:  # a NaN in the state, not in a loss
                    self._stop(m, str(err))

    def _stop(self, member, line: str) -> None:
        """A seed diverged: one run raises its line; in a batch the seed writes nothing more
        and its line is said now and raised when the others are done."""
        if self.count == 1:
            raise TrainingDiverged(line)
        if id(member) not in self.stopped:
            self.stopped[id(member)] = f"seed {member.cfg.seed}: {line}"
            self.say(self.stopped[id(member)])


def _cuda(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


__all__ = ["SeedBatch", "own_rng"]
