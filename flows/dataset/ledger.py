"""The run's ledger: every prompt, sample and pair is in the output or in a named, counted drop.

`build` fills it from the prompt manifest, the shards' counts and its own writers, and checks every
equation; one that does not close stops the build with one line naming it (no `build.json` is written).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from serving.errors import RlaifError


class LedgerError(RlaifError):
    """Something the run was given is neither in the output nor in a named drop."""

    exit_code: ClassVar[int] = 5
    label: ClassVar[str] = "ledger"


class Account(BaseModel):
    """One equation: `given` = `kept` + the sum of `dropped` (reason -> count)."""

    given: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)

    def drop(self, why: str, k: int = 1) -> None:
        if k:
            self.dropped[why] = self.dropped.get(why, 0) + k

    def drops(self, counts: dict[str, int], prefix: str = "") -> None:
        for why, k in counts.items():
            self.drop(f"{prefix}{why}", int(k))

    def closes(self) -> bool:
        return self.given == self.kept + sum(self.dropped.values())

    def equation(self) -> str:
        parts = " + ".join(f"{k} {why}" for why, k in sorted(self.dropped.items()))
        return f"{self.given} = {self.kept} kept" + (f" + {parts}" if parts else "")


class Ledger(BaseModel):
    """summary.json `build.ledger` and the card's ledger table.

    - prompts: read from the input -> UltraFeedback rows (+ input, generation and lint drops);
    - samples: asked of the policy (n per prompt sent) -> completions in the rows;
    - pairs: per origin ("judge", "constitution"), candidates -> preference pairs written;
    - sft: UltraFeedback rows -> best-of-N SFT rows.
    `notes` are counted but lose nothing (turns a `turns` column had beyond the first, re-picks)."""

    prompts: Account = Field(default_factory=Account)
    samples: Account = Field(default_factory=Account)
    pairs: dict[str, Account] = Field(default_factory=dict)
    sft: Account = Field(default_factory=Account)
    notes: dict[str, int] = Field(default_factory=dict)

    def origin(self, name: str) -> Account:
        return self.pairs.setdefault(name, Account())

    def accounts(self) -> list[tuple[str, Account]]:
        return [("prompts", self.prompts), ("samples", self.samples),
                *((f"pairs ({o})", a) for o, a in sorted(self.pairs.items())), ("best-of-N rows", self.sft)]  # fmt: skip

    def check(self) -> None:
        """Raise `LedgerError` naming the first equation that does not close."""
        for name, acc in self.accounts():
            if not acc.closes():
                lost = acc.given - acc.kept - sum(acc.dropped.values())
                raise LedgerError(
                    f"the ledger does not close for {name}: {acc.equation()} leaves {lost:+d} unaccounted "
                    "(a bug in rlaif: please report it with this run's summary.json); no dataset was marked finished"
                )
