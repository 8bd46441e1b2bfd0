"""The judge gate: judge-eval on the recipe's labelled pairs, on the real judge endpoint, before any
generation request. Below a threshold the run stops with exit code 3 (`--no-gate` overrides)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

from flows.dataset.atomic_files import read_json, write_json
from flows.dataset.gate_result import GateResult
from flows.dataset.prompts import resolve_path
from flows.engine.cost_estimate import OnceRequests
from flows.recipe import Recipe
from serving.errors import RlaifError


class GateFailed(RlaifError):
    """The gated judge scored below a threshold on the labelled pairs."""

    exit_code: ClassVar[int] = 3
    label: ClassVar[str] = "gate failed"


class Gate:
    """The recipe's gate, resolved before any server starts: the pairs are read (a bad file fails the
    run up front with exit 2) and the gated judge is chosen."""

    def __init__(self, recipe: Recipe, recipe_dir: Path | None, out: Path) -> None:
        from flows.evals.judge_eval import load_pairs
        from judges.registry import make_judge

        assert recipe.gate is not None
        self.spec = recipe.gate
        config = recipe.gate_judge()
        assert config is not None
        self.config = config.resolved(recipe_dir)
        self.path = resolve_path(self.spec.pairs, recipe_dir)
        self.pairs = load_pairs(self.path)[: self.spec.limit]
        self.served = recipe.judge_endpoint(self.config.judge)
        self.judge = make_judge(self.config)  # built once; `run` binds it to the endpoint's client
        h = hashlib.sha256(self.path.read_bytes())
        h.update(f"{self.judge.fingerprint()}|{self.served.display_name()}|{self.spec.limit}".encode())
        self.key = h.hexdigest()[:16]
        self.saved = out / "gate.json"
        self.client_config = recipe.client

    def cached(self) -> GateResult | None:
        """The figures of an earlier run of this same gate (same judge, endpoint model and pairs)."""
        if self.saved.exists():
            old = GateResult.model_validate(read_json(self.saved))
            if old.key == self.key:
                return old
        return None

    def estimate_requests(self) -> list[OnceRequests]:
        """The gate's requests for `rlaif estimate`: none when gate.json holds this gate's figures."""
        if self.cached() is not None:
            return []
        return [OnceRequests(stage="gate", served=self.served, render=self._rehearse)]

    async def _rehearse(self, client: object) -> None:
        """Judge the pairs through `client` (the estimate's, which sends nothing), as `run` does."""
        from flows.evals.judge_eval import evaluate

        await evaluate(self.judge.bind(client), self.pairs)

    def run(self) -> GateResult:
        """Evaluate the judge on its live endpoint (call inside `live_endpoints`)."""
        from flows.evals.judge_eval import evaluate
        from serving.shared import run_sync, shared_client

        res = self.cached()
        if res is None:
            client = shared_client(self.served.endpoint_list(), self.client_config)
            ev = run_sync(lambda: evaluate(self.judge.bind(client), self.pairs))
            res = GateResult(
                judge=self.config.key, pairs=str(self.path), key=self.key, figures=ev.model_dump()
            )
        res.thresholds = self.spec.thresholds()
        res.informational = not res.thresholds
        res.failures = [
            f"{name} {'n/a' if res.figures.get(name) is None else f'{res.figures[name]:.2f}'} < {low:.2f}"
            for name, low in res.thresholds.items()
            if res.figures.get(name) is None or res.figures[name] < low
        ]
        res.passed = not res.failures
        write_json(self.saved, res.model_dump())
        return res

    def enforce(self, res: GateResult, no_gate: bool) -> GateResult:
        """Raise `GateFailed` (exit 3) on a failed gate unless `no_gate`."""
        if res.passed:
            return res
        if no_gate:
            return res.model_copy(update={"overridden": True})
        raise GateFailed(
            f"judge {res.judge} on {self.path}: {', '.join(res.failures)} ({res.figures.get('n', 0)} pairs); "
            f"no generation request was sent; figures in {self.saved}; use a stronger judge, lower "
            "the `gate:` thresholds, or pass --no-gate"
        )
