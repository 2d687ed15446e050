"""Stage 1 of LEAFE: tree-based experience generation.

The explorer runs episodes of one task. Every ``reflect_every`` steps, and when an episode fails,
the same model reflects on its trajectory and returns (τ, e) or "no rollback". A rollback request
becomes a queued branch (breadth-first, FIFO); a branch resets the environment, replays the actions
before τ, and continues from τ with the experience summary e in its prompt. Exploration goes on
after a success until the attempt budget (episodes) is spent or the queue is empty and no budget
is left; when the queue runs dry while budget remains, a fresh episode restarts from the task's
beginning.

All state lives in the store: the next piece of work is always derived from it, so ``resume``
simply continues, and a node committed before a kill is neither lost nor repeated.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.actions import action_grammar, parse_action, parse_reflection, reflection_grammar
from engine.backends.base import Completion, ModelBackend
from engine.envs.base import Environment, without_addresses
from engine.errors import LeafeError, SettingError
from engine.events import BranchChanged, ExplorerEvent, NodeCommitted, ReflectionMade, RunChanged
from engine.prompts import PromptTexts, Turn, chain_guidance, reflection_messages, trajectory_messages
from engine.specs import EnvSpec, ModelSpec
from engine.store import Branch, Node, Store


@dataclass
class ExploreConfig:
    """Every setting of a run; recorded with the run in the store."""

    budget: int = field(
        default=8, metadata={"help": "Attempt budget: episodes per task (root, branches, restarts)."}
    )
    max_depth: int = field(
        default=3, metadata={"help": "Deepest branch level (the first episode is level 0)."}
    )
    reflect_every: int = field(
        default=5, metadata={"help": "K: reflect every K steps of an unfinished episode."}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of actions."})
    reflect_temperature: float = field(default=0.3, metadata={"help": "Sampling temperature of reflections."})
    max_tokens: int = field(default=512, metadata={"help": "Reply length limit per step, in tokens."})
    reflect_max_tokens: int = field(default=256, metadata={"help": "Reflection length limit, in tokens."})
    seed: int = field(
        default=0, metadata={"help": "Sampling seed of the run (each call's seed derives from it)."}
    )
    grammar: bool = field(
        default=True, metadata={"help": "Constrain replies with a GBNF grammar (eval's default too)."}
    )
    max_thought_chars: int = field(
        default=400, metadata={"help": "With the grammar: longest <think> part, so the action always fits."}
    )
    task_seed: int = field(default=0, metadata={"help": "Seed passed to the environment's reset."})
    strategy: str = field(
        default="tree",
        metadata={
            "help": "How the budget is spent: tree (LEAFE: reflect, roll back to step τ, branch), refine "
            "(linear retries: after a failure, start again from the beginning with the reflection) or "
            "independent (fresh episodes, no reflection)."
        },
    )
    step_budget: int = field(
        default=0,
        metadata={
            "help": "Environment steps (code: program executions) the run may spend, 0 for no limit; "
            "replays of a stored prefix are not counted. With it, the last episode may be cut short."
        },
    )
    adapter: str | None = None  # the GGUF LoRA the model ran with (recorded; the backend loads it)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExploreConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def validate(self) -> None:
        if self.budget < 1:
            raise SettingError("the attempt budget must be at least 1 episode")
        if self.max_depth < 0:
            raise SettingError("the deepest branch level must be 0 or more")
        if self.reflect_every < 1:
            raise SettingError("reflecting every K steps needs K of at least 1")
        for name, value in (("max_tokens", self.max_tokens), ("reflect_max_tokens", self.reflect_max_tokens)):
            if value < 1:
                raise SettingError(f"the reply length limit ({name}) must be at least 1 token, not {value}")
        for name, value in (
            ("temperature", self.temperature),
            ("reflect_temperature", self.reflect_temperature),
        ):
            if value < 0:
                raise SettingError(f"the sampling {name} must be 0 or more, not {value}")
        if self.max_thought_chars < 0:
            raise SettingError(f"max_thought_chars must be 0 or more, not {self.max_thought_chars}")
        if self.strategy not in STRATEGIES:
            raise SettingError(
                f"unknown exploration strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}"
            )
        if self.step_budget < 0:
            raise SettingError(f"the step budget must be 0 (no limit) or more, not {self.step_budget}")

    def steps_spent(self, steps: int) -> bool:
        """Whether a run that took ``steps`` environment steps has used up its step budget."""
        return self.step_budget > 0 and steps >= self.step_budget


# The three ways of spending an exploration budget that the paper compares (its Table 3).
STRATEGIES = ("independent", "refine", "tree")


class ReplayMismatch(LeafeError, RuntimeError):
    """Replaying stored actions gave a different observation: the environment is not deterministic."""


MAX_SNAPSHOTS = 256  # environment states kept for rollbacks (the newest)


def same_observation(a: str, b: str) -> bool:
    """Whether a replayed observation matches the stored one, memory addresses aside."""
    return a == b or without_addresses(a) == without_addresses(b)


def call_seed(*parts: object) -> int:
    """A stable per-call sampling seed, so a resumed run samples exactly as the original would have."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


class Explorer:
    """Runs (and resumes) Stage-1 explorations, writing every node to the store as it happens."""

    def __init__(
        self,
        store: Store,
        backend: ModelBackend,
        env: Environment,
        config: ExploreConfig | None = None,
        *,
        on_event: Callable[[ExplorerEvent], None] | None = None,
        stop: threading.Event | None = None,
        max_saved_prefixes: int = 8,
        reflector: ModelBackend | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        # A second model may write the reflections (a stronger diagnostician than a small actor);
        # the run records its spec and each reflection the model's name.
        self.reflector = reflector or backend
        self.env = env
        self.config = config or ExploreConfig()
        self.config.validate()
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.texts = PromptTexts.for_env(env.action_help)  # a resumed run's come from its record
        self._prefixes: OrderedDict[int, Any] = OrderedDict()  # branch id -> saved KV prefix
        self._max_saved_prefixes = max_saved_prefixes
        self._numbers: dict[int, int] = {}  # branch id -> its place in its run (seeds)
        self._snapshots: OrderedDict[int, Any] = OrderedDict()  # node id -> environment state after it

    # --- public API --------------------------------------------------------------------------
    def start(
        self,
        task_id: str,
        model: str,
        *,
        model_spec: ModelSpec | None = None,
        env_spec: EnvSpec | None = None,
        reflect_spec: ModelSpec | None = None,
    ) -> int:
        """Create a run for ``task_id``, explore it, and return the run id.

        The specs (how to reopen this model and environment) and the prompt texts are recorded with
        the run, so a resume, a re-branch, a dataset or an evaluation needs no flag repeated.
        """
        first_observation = self.env.reset(task_id, self.config.task_seed)
        run_id, root = self.store.create_run(
            task_id,
            self.env.name,
            model,
            self.backend.name,
            asdict(self.config),
            first_observation,
            model_spec=model_spec.to_json() if model_spec else None,
            env_spec=(env_spec or EnvSpec(self.env.name)).to_json(),
            prompts=self.texts.to_json(),
            reflect_spec=reflect_spec.to_json() if reflect_spec else None,
        )
        self._remember(root.id)
        self.on_event(RunChanged(run_id, "running", task_id))
        self.on_event(BranchChanged(run_id, root.branch_id, "running"))
        self.on_event(NodeCommitted(run_id, root))
        self._loop(run_id, task_id)
        return run_id

    def resume(self, run_id: int) -> int:
        """Continue a run that was interrupted; committed nodes are kept, none is repeated.

        Raises RunBusy (a StoreError) when another live process is exploring the run.
        """
        run = self.store.claim_run(run_id)
        self._use_recorded_prompts(run)
        self.on_event(RunChanged(run_id, "running", run["task_id"], resumed=True))
        self._loop(run_id, run["task_id"])
        return run_id

    def rebranch(self, run_id: int, branch_id: int, summary: str) -> Branch:
        """Start a sibling of rollback branch ``branch_id`` with a person's summary and explore it now.

        History is never rewritten: the old branch stays as it was, and the new one records the
        generated summary it came from, the edit, and ``rebranch_of``. A re-branch is one more
        episode; when the run's budget is already spent it grows by one (recorded in the run's
        config) so an explicit request from a person always runs. The run's other queued branches
        stay queued.
        """
        source = self.store.branch(branch_id)
        if source.run_id != run_id:
            raise SettingError(f"branch {branch_id} does not belong to run {run_id}")
        if source.kind != "rollback" or source.rollback_step is None:
            raise SettingError(f"branch {branch_id} is not a rollback branch; only those can be re-branched")
        if not summary.strip():
            raise SettingError("the experience summary is empty")
        run = self.store.claim_run(run_id, finished_ok=True)
        self._use_recorded_prompts(run)
        child = self.store.add_branch(
            run_id,
            "rollback",
            source.from_node_id,
            source.depth,
            parent_branch_id=source.parent_branch_id,
            reflection_id=source.reflection_id,
            rollback_step=source.rollback_step,
            summary=source.summary,
            status="running",
            origin="person",
            rebranch_of=source.id,
        )
        self.store.edit_summary(child.id, summary.strip())
        if self.store.episodes_used(run_id) > self.config.budget:
            self.config.budget = self.store.episodes_used(run_id)
            self.store.set_run_config(run_id, asdict(self.config))
        self.on_event(BranchChanged(run_id, child.id, "running", rebranch_of=source.id))
        self._loop(run_id, run["task_id"], only=child.id)
        return self.store.branch(child.id)

    def _use_recorded_prompts(self, run: dict[str, Any]) -> None:
        """Continue a run with the prompt texts it started with (older runs have none recorded)."""
        if run.get("prompts"):
            self.texts = PromptTexts.from_json(run["prompts"])

    # --- the breadth-first loop -------------------------------------------------------------
    def _loop(self, run_id: int, task_id: str, only: int | None = None) -> None:
        try:
            if only is not None:  # a person's re-branch runs whole, whatever the step budget says
                self._run_branch(run_id, task_id, self.store.branch(only), step_budget=False)
            while only is None and not self.stop.is_set():
                branch = self.store.next_branch(run_id)
                # With the step budget spent, an episode a kill left running is still closed (its
                # last step may have succeeded); nothing new starts.
                if self._steps_spent(run_id) and (branch is None or branch.status != "running"):
                    self._skip_queued(run_id)
                    break
                if branch is None:
                    if self.store.episodes_used(run_id) >= self.config.budget:
                        break
                    branch = self._restart_branch(run_id)
                if branch.status == "queued":
                    if self.store.episodes_used(run_id) >= self.config.budget:
                        self._skip_queued(run_id)
                        break
                    self.store.set_branch_status(branch.id, "running")
                    self.on_event(BranchChanged(run_id, branch.id, "running"))
                self._run_branch(run_id, task_id, self.store.branch(branch.id))
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            self.store.set_run_status(run_id, status, error=f"{type(exc).__name__}: {exc}")
            self.on_event(RunChanged(run_id, status))
            raise
        status = (
            "stopped" if self.stop.is_set() or (only is not None and self._work_left(run_id)) else "finished"
        )
        self.store.set_run_status(run_id, status)
        self.on_event(RunChanged(run_id, status))

    def _steps_spent(self, run_id: int) -> bool:
        """Whether the step budget is used up (no query at all for a run without one)."""
        return self.config.step_budget > 0 and self.config.steps_spent(self.store.steps_used(run_id))

    def _work_left(self, run_id: int) -> bool:
        """Whether a resume would still explore: a queued branch, or episodes left in the budget."""
        if self._steps_spent(run_id):
            return False
        queued = any(b.status == "queued" for b in self.store.branches(run_id))
        return queued or self.store.episodes_used(run_id) < self.config.budget

    def _restart_branch(self, run_id: int) -> Branch:
        root = self.store.root_node(run_id)
        assert root is not None
        return self.store.add_branch(run_id, "restart", root.id, depth=0)

    def _skip_queued(self, run_id: int) -> None:
        for branch in self.store.branches(run_id):
            if branch.status == "queued":
                self.store.set_branch_status(branch.id, "skipped", outcome="budget spent")
                self.on_event(BranchChanged(run_id, branch.id, "skipped", outcome="budget spent"))

    # --- one episode -------------------------------------------------------------------------
    def _run_branch(self, run_id: int, task_id: str, branch: Branch, *, step_budget: bool = True) -> None:
        prefix = self.store.path_to(branch.from_node_id)
        own = self.store.branch_nodes(branch.id)
        if branch.kind == "root":  # the root node (step 0) belongs to the root branch
            own = [n for n in own if n.step > 0]
        path = prefix + own
        self._replay(task_id, path)
        guidance = self._guidance(branch)
        handle = self._prefixes.pop(branch.id, None)
        if handle is not None:
            self.backend.restore_prefix(handle)

        while not self.stop.is_set():
            last = path[-1]
            # Past the step budget no reflection is paid for: the branch it asks for could not run.
            spent = step_budget and self._steps_spent(run_id)
            if own and own[-1].id == last.id:
                if last.success:
                    self._finish(run_id, branch, "success")
                    return
                if last.done:
                    if not spent:
                        self._reflect(run_id, branch, path, guidance, failed=True)
                    self._finish(run_id, branch, "failure")
                    return
                if (
                    last.step % self.config.reflect_every == 0
                    and self.config.strategy == "tree"
                    and not spent
                ):
                    # A periodic rollback queues a branch; this episode goes on (it may still succeed).
                    self._reflect(run_id, branch, path, guidance, failed=False)
            if spent:
                self._finish(run_id, branch, "budget spent")
                return
            node = self._act(run_id, branch, path, guidance)
            path.append(node)
            own.append(node)

    def _finish(self, run_id: int, branch: Branch, outcome: str) -> None:
        self.store.set_branch_status(branch.id, "done", outcome)
        self.on_event(BranchChanged(run_id, branch.id, "done", outcome=outcome))

    def _replay(self, task_id: str, path: list[Node]) -> None:
        """Bring the environment to the end of ``path``: from the deepest node with a snapshot
        (environments that take them), else from a reset; every replayed observation is checked."""
        start = next((i for i in range(len(path) - 1, -1, -1) if path[i].id in self._snapshots), None)
        if start is not None:
            self._snapshots.move_to_end(path[start].id)
            self.env.restore(self._snapshots[path[start].id])
        else:
            start = 0
            observation = self.env.reset(task_id, self.config.task_seed)
            if not same_observation(observation, path[0].observation):
                raise ReplayMismatch(
                    f"reset of {task_id} gave a different first observation than the stored run"
                )
            self._remember(path[0].id)
        for node in path[start + 1 :]:
            result = self.env.step(parse_action(node.raw_response or ""))
            if not same_observation(result.observation, node.observation):
                raise ReplayMismatch(
                    f"replaying step {node.step} (node {node.id}) gave a different observation"
                )
            self._remember(node.id)

    def _remember(self, node_id: int) -> None:
        """Keep the environment's state after ``node_id`` (when it takes snapshots), the newest few."""
        snapshot = self.env.snapshot()
        if snapshot is None:
            return
        self._snapshots[node_id] = snapshot
        self._snapshots.move_to_end(node_id)
        while len(self._snapshots) > MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)

    def _guidance(self, branch: Branch) -> dict[int, list[str]]:
        return chain_guidance(self.store.branch_chain(branch))

    def _messages(self, path: list[Node], guidance: dict[int, list[str]]) -> list[dict[str, str]]:
        turns = [Turn(n.raw_response or "", n.observation) for n in path[1:]]
        return trajectory_messages(
            self.env.action_help, path[0].observation, turns, guidance, texts=self.texts
        )

    def _act(self, run_id: int, branch: Branch, path: list[Node], guidance: dict[int, list[str]]) -> Node:
        step = path[-1].step + 1
        grammar = (
            action_grammar(self.env.action_grammar(), self.config.max_thought_chars)
            if self.config.grammar
            else None
        )
        completion = self.backend.complete(
            self._messages(path, guidance),
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=call_seed(self.config.seed, self._branch_number(branch), step, "act"),
            grammar=grammar,
        )
        parsed = parse_action(completion.text)
        result = self.env.step(parsed)
        node = self.store.add_node(
            run_id=run_id,
            branch_id=branch.id,
            parent_id=path[-1].id,
            step=step,
            action=parsed.action,
            raw_response=completion.text,
            thought=parsed.thought,
            valid=result.valid,
            observation=result.observation,
            feedback=result.feedback,
            reward=result.reward,
            done=result.done,
            success=result.success,
            info=result.info,
            **_cost(completion),
        )
        self._remember(node.id)
        self.on_event(NodeCommitted(run_id, node))
        return node

    def _reflect(
        self, run_id: int, branch: Branch, path: list[Node], guidance: dict[int, list[str]], *, failed: bool
    ) -> None:
        """Reflect on the path and queue the branch it asks for (skipped if done before a kill)."""
        last = path[-1]
        if self.config.strategy == "independent" or self.store.reflection_for(last.id) is not None:
            return
        messages = reflection_messages(self._messages(path, guidance), last.step, failed, last.done)
        completion = self.reflector.complete(
            messages,
            temperature=self.config.reflect_temperature,
            max_tokens=self.config.reflect_max_tokens,
            seed=call_seed(self.config.seed, self._branch_number(branch), last.step, "reflect"),
            grammar=reflection_grammar(not failed, self.config.max_thought_chars)
            if self.config.grammar
            else None,
        )
        reflection = parse_reflection(completion.text, last.step)
        if self.config.strategy == "refine" and reflection.wants_rollback:
            reflection = replace(reflection, step=1)  # a linear retry: from the beginning, with the lesson
        note = None
        if reflection.wants_rollback and branch.depth + 1 > self.config.max_depth:
            note = "max depth reached"
        elif reflection.wants_rollback and (
            twin := self._same_branch(path, reflection.step, reflection.summary)
        ):
            note = f"same as branch #{twin}"
        reflection_id = self.store.add_reflection(
            run_id=run_id,
            branch_id=branch.id,
            node_id=last.id,
            trigger="failure" if failed else "periodic",
            last_step=last.step,
            raw_response=completion.text,
            rollback_step=reflection.step if reflection.wants_rollback else None,
            summary=reflection.summary or None,
            parse_error=reflection.error,
            note=note,
            model=self.reflector.name,
            **_cost(completion),
        )
        self.on_event(
            ReflectionMade(
                run_id, reflection_id, last.id, reflection.step, reflection.summary, reflection.error, note
            )
        )
        if not reflection.wants_rollback or note is not None:
            return
        assert reflection.step is not None
        from_node = path[reflection.step - 1]
        child = self.store.add_branch(
            run_id,
            "rollback",
            from_node.id,
            branch.depth + 1,
            parent_branch_id=branch.id,
            reflection_id=reflection_id,
            rollback_step=reflection.step,
            summary=reflection.summary,
        )
        self._save_prefix(child, path[: reflection.step], live=not (failed or last.done))
        self.on_event(
            BranchChanged(
                run_id,
                child.id,
                "queued",
                rollback_step=reflection.step,
                summary=reflection.summary,
                parent_branch_id=branch.id,
            )
        )

    def _same_branch(self, path: list[Node], step: int | None, summary: str) -> int | None:
        """A branch already asked for from the same node with the same summary (it would repeat it)."""
        assert step is not None
        from_node = path[step - 1]
        for other in self.store.branches(from_node.run_id):
            if other.from_node_id == from_node.id and other.kind == "rollback" and other.summary == summary:
                return other.id
        return None

    def _branch_number(self, branch: Branch) -> int:
        """The branch's place in its run (0 for the root). Seeds use it rather than the database-wide
        id, so a run samples the same whatever else the database holds or explores at the same time
        (``--workers``)."""
        if branch.id not in self._numbers:
            self._numbers = {b.id: i for i, b in enumerate(self.store.branches(branch.run_id))}
        return self._numbers[branch.id]

    def _save_prefix(self, child: Branch, prefix: list[Node], *, live: bool = False) -> None:
        """Keep the KV state of the child's shared history while the model's context still holds it
        (``live``: the episode goes on after this reflection, so its own cache must stay whole)."""
        handle = self.backend.save_prefix(self._messages(prefix, self._guidance(child)), live=live)
        if handle is None:
            return
        self._prefixes[child.id] = handle
        while len(self._prefixes) > self._max_saved_prefixes:
            self._prefixes.popitem(last=False)


def _cost(completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "cached_tokens": completion.cached_tokens,
        "generated_tokens": completion.generated_tokens,
        "seconds": completion.seconds,
    }
