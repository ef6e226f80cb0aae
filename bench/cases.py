"""Generated cases with realistic spreads of the vocabulary's fields (seeded, reproducible)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

MILESTONES = [
    ["need_clarified", "decision_weights_known", "decision_makers_contacted"],
    ["considering_us", "demo_effective", "concerns_raised"],
    ["strengths_understood", "mutual_trust", "details_agreed"],
    ["value_beats_rival", "trust_beats_rival", "leadership_committed"],
]
ROLES = ["raise_need", "search", "decide", "use", "evaluate"]
AS_OF = dt.date(2026, 11, 27)


def _milestones(rng: random.Random) -> list[str]:
    reached: list[str] = []
    for level in MILESTONES:
        if rng.random() < 0.6:
            reached += level
        else:
            reached += rng.sample(level, rng.randint(0, 2))
            break
    return reached


def generate(count: int, seed: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    for i in range(count):
        opportunity: dict[str, Any] = {
            "id": f"opp-{i:07d}",
            "account_id": f"acc-{rng.randint(1, max(1, count // 20)):06d}",
            "amount": round(rng.lognormvariate(11, 1.2), 2),
            "period_target": rng.choice([1_000_000, 2_000_000, 5_000_000]),
            "damage": rng.choice(["high", "low"]),
            "revenue_effect": rng.choice(["up", "down"]),
        }
        if rng.random() < 0.85:
            opportunity["close_date"] = (AS_OF + dt.timedelta(days=rng.randint(-14, 140))).isoformat()
        else:
            opportunity["weeks_to_close"] = rng.randint(0, 20)
        if rng.random() < 0.3:
            opportunity["win_rate"] = rng.choice([0, 20, 40, 60, 80])
        else:
            opportunity["milestones"] = _milestones(rng)
        account: dict[str, Any] = {
            "id": opportunity["account_id"],
            "profit_level": rng.choice(["high", "medium", "low", "loss"]),
            "potential": rng.choice(["high", "low"]),
            "regularity": rng.choice(["regular", "irregular"]),
            "contact_state": rng.choice(["blank", "partial", "broad"]),
            "roles_known": rng.sample(ROLES, rng.randint(0, 5)),
        }
        if rng.random() < 0.5:
            account["attractiveness"] = rng.choice(["high", "low"])
            account["advantage"] = rng.choice(["high", "low"])
        else:
            account["attractiveness_score"] = rng.randint(0, 100)
            account["advantage_score"] = rng.randint(0, 100)
        market = {
            "stance": rng.choice(["leader", "challenger", "follower", "specialist"]),
            "internal": rng.choice(["strength", "weakness"]),
            "external": rng.choice(["opportunity", "threat"]),
        }
        yield (
            opportunity["id"],
            {"id": opportunity["id"], "opportunity": opportunity, "account": account, "market": market},
        )
