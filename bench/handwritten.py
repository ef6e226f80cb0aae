"""The hand-written anchor: the course playbook as a plain Python function, against our engine.

    python bench/handwritten.py [--check 20000] [--cases 100000] [--repeat 3]

``course(case, as_of)`` is playbooks/course.yaml written out by hand: every decision table
(with its hit policy) and every rule, in the playbook's evaluation order (``Playbook.order``:
the tables, then the groups of rules; the rules of a group in file order), the parameters
as constants.  It returns the decisions (every decision of the playbook, ``None`` when
undetermined) and the recommendations as (action id, params), in our engine's order (what the
playbook decides once per market, ``group_by: market``, is no part of a case, nor of this).  It is
the ceiling for what Python can do with this playbook: it does no input typing (no
``bad_input``), no hit-policy or output checks (the tables are exclusive by construction),
and records no trace.

1. Correctness: over ``--check`` cases from bench/cases.py, and as many again with the
   fields the generator leaves out filled in at random (``varied``: transitional, profit
   margin, competitor, market division, new service, boundary values, missing objects),
   every case must give exactly our engine's decisions and recommendations (ids and
   params, with their types and order).  The first mismatches are printed; exit 1 if any.
2. Timing: the same ``--cases`` generated cases (generated before timing) through the
   hand-written function and through our ``Evaluator`` (traces recorded as the evaluator
   always does, not expanded, no ``to_json``), ``--repeat`` times each, interleaved, a
   fresh ``Evaluator`` each time; the best run of each counts.  Prints a table and the
   ratio ours/hand-written; writes bench/results/handwritten.json.

``run(count)`` gives the timing figures as a dict, for a combined benchmark.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, load_average, write_json  # noqa: E402

COURSE = ROOT / "playbooks" / "course.yaml"

# ---------------------------------------------------------------------------------------------
# The playbook's parameters, copied by hand (check() compares them with the YAML, so a tuned
# parameter shows up as drift rather than as thousands of mismatches).

HIGH_PROFIT_MARGIN = 0.30  # high_profit_margin
MEDIUM_PROFIT_MARGIN = 0.10  # medium_profit_margin
LOSS_MARGIN_BELOW = 0  # loss_margin_below
PROJECT_TYPE_HIGH_DAMAGE_REVENUE_UP = "killer"  # project_type_high_damage_revenue_up
PROJECT_TYPE_HIGH_DAMAGE_REVENUE_DOWN = "strategic"  # project_type_high_damage_revenue_down
PROJECT_TYPE_LOW_DAMAGE_REVENUE_UP = "revenue"  # project_type_low_damage_revenue_up
PROJECT_TYPE_LOW_DAMAGE_REVENUE_DOWN = "suicidal"  # project_type_low_damage_revenue_down
SWOT_STRENGTH_OPPORTUNITY = "keep_developing"  # swot_strength_opportunity
SWOT_STRENGTH_THREAT = "stay_alert"  # swot_strength_threat
SWOT_WEAKNESS_OPPORTUNITY = "challenge_ourselves"  # swot_weakness_opportunity
SWOT_WEAKNESS_THREAT = "reinvent_ourselves"  # swot_weakness_threat
HIGH_ATTRACTIVENESS_SCORE = 60  # high_attractiveness_score
HIGH_ADVANTAGE_SCORE = 60  # high_advantage_score
KEY_ACCOUNT_MAX_LEVEL = 2  # key_account_max_level
KEY_ACCOUNT_AMOUNT_CLASS = "A"  # key_account_amount_class
DIRECTOR_AMOUNT_CLASS = "A"  # director_amount_class
ENQUIRE_MIN_WIN_RATE = 40  # enquire_min_win_rate
AMOUNT_SHARE_A = 0.30  # amount_share_a
AMOUNT_SHARE_B = 0.10  # amount_share_b
WEEKS_2_TO_4_LAYER = "middle"  # weeks_2_to_4_layer
WEEKS_6_TO_10_LAYER = "middle"  # weeks_6_to_10_layer
OVERDUE_LAYER = "bottom"  # overdue_layer
STALLED_AFTER_WEEKS = 8  # stalled_after_weeks
HIGH_WIN_RATE = 60  # high_win_rate
BATTLE_TYPE_BOTTOM_LOW_WIN = "guerrilla"  # battle_type_bottom_low_win
BATTLE_TYPE_MIDDLE = "positional"  # battle_type_middle
BATTLE_TYPE_SURFACE_HIGH_WIN = "defensive"  # battle_type_surface_high_win
DIVISION_WHEN_PRINCIPLES_DISAGREE = "combined"  # division_when_principles_disagree

PARAMETERS = {
    "high_profit_margin": HIGH_PROFIT_MARGIN,
    "medium_profit_margin": MEDIUM_PROFIT_MARGIN,
    "loss_margin_below": LOSS_MARGIN_BELOW,
    "project_type_high_damage_revenue_up": PROJECT_TYPE_HIGH_DAMAGE_REVENUE_UP,
    "project_type_high_damage_revenue_down": PROJECT_TYPE_HIGH_DAMAGE_REVENUE_DOWN,
    "project_type_low_damage_revenue_up": PROJECT_TYPE_LOW_DAMAGE_REVENUE_UP,
    "project_type_low_damage_revenue_down": PROJECT_TYPE_LOW_DAMAGE_REVENUE_DOWN,
    "swot_strength_opportunity": SWOT_STRENGTH_OPPORTUNITY,
    "swot_strength_threat": SWOT_STRENGTH_THREAT,
    "swot_weakness_opportunity": SWOT_WEAKNESS_OPPORTUNITY,
    "swot_weakness_threat": SWOT_WEAKNESS_THREAT,
    "high_attractiveness_score": HIGH_ATTRACTIVENESS_SCORE,
    "high_advantage_score": HIGH_ADVANTAGE_SCORE,
    "key_account_max_level": KEY_ACCOUNT_MAX_LEVEL,
    "key_account_amount_class": KEY_ACCOUNT_AMOUNT_CLASS,
    "director_amount_class": DIRECTOR_AMOUNT_CLASS,
    "enquire_min_win_rate": ENQUIRE_MIN_WIN_RATE,
    "amount_share_a": AMOUNT_SHARE_A,
    "amount_share_b": AMOUNT_SHARE_B,
    "weeks_2_to_4_layer": WEEKS_2_TO_4_LAYER,
    "weeks_6_to_10_layer": WEEKS_6_TO_10_LAYER,
    "overdue_layer": OVERDUE_LAYER,
    "stalled_after_weeks": STALLED_AFTER_WEEKS,
    "high_win_rate": HIGH_WIN_RATE,
    "battle_type_bottom_low_win": BATTLE_TYPE_BOTTOM_LOW_WIN,
    "battle_type_middle": BATTLE_TYPE_MIDDLE,
    "battle_type_surface_high_win": BATTLE_TYPE_SURFACE_HIGH_WIN,
    "division_when_principles_disagree": DIVISION_WHEN_PRINCIPLES_DISAGREE,
}

# ---------------------------------------------------------------------------------------------
# The tables that are plain grids of enumerations, as dict lookups: a missing or unknown input
# makes a key that is not there, which is the table's "no row matches" (None).

PROJECT_TYPE = {
    ("high", "up"): PROJECT_TYPE_HIGH_DAMAGE_REVENUE_UP,
    ("high", "down"): PROJECT_TYPE_HIGH_DAMAGE_REVENUE_DOWN,
    ("low", "up"): PROJECT_TYPE_LOW_DAMAGE_REVENUE_UP,
    ("low", "down"): PROJECT_TYPE_LOW_DAMAGE_REVENUE_DOWN,
}
CUSTOMER_CLASS = {  # (attractiveness_level, advantage_level)
    ("high", "high"): "consolidate",
    ("high", "low"): "invest",
    ("low", "high"): "harvest",
    ("low", "low"): "maintain",
}
CUSTOMER_LEVEL = {"consolidate": 1, "invest": 2, "harvest": 3, "maintain": 4}
# The rows' literal lists, in the rows' order (harvest is 2, 12, 1 as the course writes it).
MARKET_ACTIONS = {
    "consolidate": [4, 7, 9, 16],
    "invest": [3, 6, 8, 15],
    "harvest": [2, 12, 1],
    "maintain": [5, 10, 11, 13, 14],
}
# The rules market_action_1 .. market_action_16 each test "market_actions contains n" and run
# in rule order, so a class recommends its actions in numeric order, not in its row's order.
MARKET_ACTION_IDS = {
    "consolidate": ("market_action_4", "market_action_7", "market_action_9", "market_action_16"),
    "invest": ("market_action_3", "market_action_6", "market_action_8", "market_action_15"),
    "harvest": ("market_action_1", "market_action_2", "market_action_12"),
    "maintain": ("market_action_5", "market_action_10", "market_action_11", "market_action_13", "market_action_14"),
}
# win_rate (hit policy first): the highest level whose milestones, and every lower level's, are all met.
LEVEL_20 = frozenset({"need_clarified", "decision_weights_known", "decision_makers_contacted"})
LEVEL_40 = LEVEL_20 | {"considering_us", "demo_effective", "concerns_raised"}
LEVEL_60 = LEVEL_40 | {"strengths_understood", "mutual_trust", "details_agreed"}
LEVEL_80 = LEVEL_60 | {"value_beats_rival", "trust_beats_rival", "leadership_committed"}
WIN_LEVEL = {0: "none", 20: "understand_background", 40: "present_and_guide", 60: "build_trust", 80: "beat_the_rival"}

# Rules that map one decision value to one action without params.
CONTRIBUTION_ACTION = {
    "fat_sheep": "look_after_fat_sheep",
    "reindeer": "watch_reindeer",
    "hunting_dog": "raise_hunting_dog",
    "hare": "watch_hares_and_rats",
    "rat": "watch_hares_and_rats",
}
ROLES = ("raise_need", "search", "decide", "use", "evaluate")  # find_role_* in file order
CONTACT_ACTIONS = {
    "blank": ("promote_with_new_service", "formal_introduction"),
    "partial": ("formal_introduction", "learn_purchasing_procedure", "learn_key_needs"),
    "broad": ("learn_purchasing_procedure", "learn_key_needs"),
}
BATTLE_ACTION = {
    "blitz": "fight_blitz",
    "guerrilla": "fight_guerrilla",
    "positional": "fight_positional",
    "defensive": "fight_defensive",
    "siege": "fight_siege",
}

_NOTHING: dict[str, Any] = {}  # stands for an absent object; never written to


def course(case: dict[str, Any], as_of: dt.date) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The course playbook's decisions and recommendations (action id, params) for one case."""
    opportunity = case.get("opportunity") or _NOTHING
    account = case.get("account") or _NOTHING

    # -- decision tables, in Playbook.order ------------------------------------------------
    profit_band = account.get("profit_level")  # row "given" passes it through
    if profit_band is None:
        margin = account.get("profit_margin")
        if margin is None:
            pass
        elif margin >= HIGH_PROFIT_MARGIN:
            profit_band = "high"
        elif margin >= MEDIUM_PROFIT_MARGIN:
            profit_band = "medium"
        elif margin >= LOSS_MARGIN_BELOW:
            profit_band = "low"
        else:
            profit_band = "loss"

    contribution_type = None
    if profit_band == "loss":
        contribution_type = "rat"
    elif profit_band == "high":
        contribution_type = "fat_sheep"
    elif profit_band == "medium":
        regularity = account.get("regularity")
        if regularity == "regular":
            contribution_type = "reindeer"
        elif regularity == "irregular":
            potential = account.get("potential")
            if potential == "high":
                contribution_type = "hunting_dog"
            elif potential == "low":
                contribution_type = "hare"
    elif profit_band == "low":
        potential = account.get("potential")
        if potential == "high":
            contribution_type = "hunting_dog"
        elif potential == "low":
            contribution_type = "hare"

    project_type = PROJECT_TYPE.get((opportunity.get("damage"), opportunity.get("revenue_effect")))

    # A given level wins; the score counts only when the level is absent.
    attractiveness_level = account.get("attractiveness")
    if attractiveness_level is None:
        score = account.get("attractiveness_score")
        if score is not None:
            attractiveness_level = "high" if score >= HIGH_ATTRACTIVENESS_SCORE else "low"
    advantage_level = account.get("advantage")
    if advantage_level is None:
        score = account.get("advantage_score")
        if score is not None:
            advantage_level = "high" if score >= HIGH_ADVANTAGE_SCORE else "low"

    customer_class = CUSTOMER_CLASS.get((attractiveness_level, advantage_level))
    customer_level = CUSTOMER_LEVEL.get(customer_class)
    market_actions = MARKET_ACTIONS.get(customer_class)
    if market_actions is not None:
        market_actions = list(market_actions)  # the caller's own list, as the engine gives

    milestones = opportunity.get("milestones")
    milestone_win_rate = None  # contains_all is unknown on a missing list, and so is the "none" row
    if milestones is not None:
        reached = set(milestones)
        if reached >= LEVEL_80:
            milestone_win_rate = 80
        elif reached >= LEVEL_60:
            milestone_win_rate = 60
        elif reached >= LEVEL_40:
            milestone_win_rate = 40
        elif reached >= LEVEL_20:
            milestone_win_rate = 20
        else:
            milestone_win_rate = 0
    given_win_rate = opportunity.get("win_rate")
    win_rate = given_win_rate  # row "given", else "from_milestones", else "no_milestones"
    if win_rate is None:
        win_rate = 0 if milestone_win_rate is None else milestone_win_rate
    win_level = WIN_LEVEL.get(win_rate)
    win_rate_by_intuition = None
    if given_win_rate == 0:
        win_rate_by_intuition = False  # row "supported": a 0% claims nothing
    elif given_win_rate is not None:
        win_rate_by_intuition = True if milestone_win_rate is None else given_win_rate > milestone_win_rate
    elif milestone_win_rate is not None:
        win_rate_by_intuition = False  # row "from_milestones"

    # Derived inputs, only when the case does not give them (engine.evaluate.prepare_inputs).
    amount_share = opportunity.get("amount_share")
    if amount_share is None:
        amount = opportunity.get("amount")
        target = opportunity.get("period_target")
        if amount is not None and target is not None and target != 0:
            amount_share = round(amount / target, 6)
    amount_class = None
    if amount_share is not None:
        if amount_share >= AMOUNT_SHARE_A:
            amount_class = "A"
        elif amount_share >= AMOUNT_SHARE_B:
            amount_class = "B"
        else:
            amount_class = "C"

    weeks = opportunity.get("weeks_to_close")
    if weeks is None:
        close_date = opportunity.get("close_date")
        if close_date is not None:
            weeks = round((dt.date.fromisoformat(close_date[:10]) - as_of).days / 7, 4)
    funnel_layer = None
    if weeks is not None:
        if weeks < 0:
            funnel_layer = OVERDUE_LAYER
        elif weeks <= 2:
            funnel_layer = "bottom"
        elif weeks < 4:
            funnel_layer = WEEKS_2_TO_4_LAYER
        elif weeks <= 6:
            funnel_layer = "middle"
        elif weeks <= 10:
            funnel_layer = WEEKS_6_TO_10_LAYER
        else:
            funnel_layer = "surface"

    weeks_in_stage = opportunity.get("weeks_in_stage")
    if weeks_in_stage is None:
        entered = opportunity.get("stage_entered_date")
        if entered is not None:
            weeks_in_stage = round((as_of - dt.date.fromisoformat(entered[:10])).days / 7, 4)
    stalled_project = None
    if funnel_layer == "bottom":
        stalled_project = False
    elif funnel_layer is not None and weeks_in_stage is not None:
        stalled_project = weeks_in_stage > STALLED_AFTER_WEEKS

    # Row "key" holds when either test does; row "not_key" (otherwise) when both are known to fail;
    # else a test is unknown and so is the decision.
    level_key = None if customer_level is None else customer_level <= KEY_ACCOUNT_MAX_LEVEL
    amount_key = None if amount_class is None else amount_class == KEY_ACCOUNT_AMOUNT_CLASS
    key_account = True if level_key or amount_key else (False if level_key is False and amount_key is False else None)

    # Rows one per layer (unique); "wait and watch" (otherwise) only when all three are known to fail,
    # else a test is unknown and so is the decision.  Each test: None when the value it reads is missing.
    def known(value: Any, wanted: tuple[Any, ...]) -> bool | None:
        return None if value is None else value in wanted

    def all_of(*tests: bool | None) -> bool | None:
        return False if False in tests else (None if None in tests else True)

    amount_a = known(amount_class, (DIRECTOR_AMOUNT_CLASS,))
    director_class = known(customer_class, ("consolidate", "invest"))
    director_rows = {
        "intensive_attack": all_of(known(funnel_layer, ("bottom",)), amount_a, director_class),
        "active_investment": all_of(known(funnel_layer, ("surface",)), amount_a, director_class),
        "enquire_and_follow": all_of(
            known(funnel_layer, ("middle",)),
            known(customer_class, ("harvest", "invest")),
            win_rate >= ENQUIRE_MIN_WIN_RATE,
        ),
    }
    director_action = next((name for name, holds in director_rows.items() if holds), None)
    if director_action is None and all(holds is False for holds in director_rows.values()):
        director_action = "wait_and_watch"

    battle_type = None
    if funnel_layer == "bottom":
        battle_type = "blitz" if win_rate >= HIGH_WIN_RATE else BATTLE_TYPE_BOTTOM_LOW_WIN
    elif funnel_layer == "middle":
        battle_type = BATTLE_TYPE_MIDDLE
    elif funnel_layer == "surface":
        battle_type = BATTLE_TYPE_SURFACE_HIGH_WIN if win_rate >= HIGH_WIN_RATE else "siege"

    # -- rules, group by group in Playbook.order ---------------------------------------------
    recs: list[tuple[str, dict[str, Any]]] = []
    append = recs.append

    if contribution_type is not None:
        append((CONTRIBUTION_ACTION[contribution_type], {"contribution_type": contribution_type}))

    if key_account:
        roles_known = account.get("roles_known")
        for role in ROLES:
            # a missing list: rule find_roles_none_known asks for every role on purpose; else each one not known
            if roles_known is None or role not in roles_known:
                append(("identify_decision_role", {"roles_known": role}))

    if project_type == "strategic" or project_type == "suicidal":
        transitional = opportunity.get("transitional")
        if transitional is None:
            append(("check_transitional", {"project_type": project_type}))
        elif transitional is False and project_type == "suicidal":
            append(("reconsider_project", {"project_type": project_type}))

    contact_state = account.get("contact_state")
    if contact_state in CONTACT_ACTIONS:
        for action in CONTACT_ACTIONS[contact_state]:
            append((action, {"contact_state": contact_state}))

    if customer_class is not None:
        for action in MARKET_ACTION_IDS[customer_class]:
            append((action, {"customer_class": customer_class}))

    if weeks is not None and weeks < 0:
        append(("reconfirm_close_date", {"weeks_to_close": weeks}))
    if stalled_project:
        append(("move_stalled_project", {"funnel_layer": funnel_layer, "weeks_in_stage": weeks_in_stage}))
    if win_rate_by_intuition:
        append(("verify_win_rate", {"win_rate": given_win_rate, "milestone_win_rate": milestone_win_rate}))

    if director_action == "intensive_attack" or director_action == "active_investment":
        append(
            (
                director_action,
                {"customer_class": customer_class, "amount_class": amount_class, "funnel_layer": funnel_layer},
            )
        )
    elif director_action == "enquire_and_follow":
        append(("enquire_and_follow", {"customer_class": customer_class, "win_rate": win_rate}))
    elif director_action == "wait_and_watch":
        append(("wait_and_watch", {}))

    if battle_type is not None:
        append((BATTLE_ACTION[battle_type], {"funnel_layer": funnel_layer, "win_rate": win_rate}))

    decisions = {
        "profit_band": profit_band,
        "contribution_type": contribution_type,
        "project_type": project_type,
        "attractiveness_level": attractiveness_level,
        "advantage_level": advantage_level,
        "customer_class": customer_class,
        "customer_level": customer_level,
        "market_actions": market_actions,
        "win_rate": win_rate,  # the result keeps the playbook's declaration order
        "milestone_win_rate": milestone_win_rate,
        "win_level": win_level,
        "win_rate_by_intuition": win_rate_by_intuition,
        "amount_class": amount_class,
        "funnel_layer": funnel_layer,
        "stalled_project": stalled_project,
        "key_account": key_account,
        "director_action": director_action,
        "battle_type": battle_type,
    }
    return decisions, recs


# ---------------------------------------------------------------------------------------------
# Correctness


def varied(count: int, seed: int = 2) -> Iterator[tuple[str, dict[str, Any]]]:
    """Generated cases with what bench/cases.py never varies: the optional fields, boundary values, gaps.

    bench/cases.py never gives a profit margin, a transitional flag, the competitor, the market
    division inputs or a new service, and rarely hits a threshold exactly; these cases do, and
    sometimes drop a field or a whole object, so every row and rule gets exercised.
    """
    from bench.cases import generate

    rng = random.Random(seed)

    def maybe(values: list[Any]) -> Any:
        return rng.choice([*values, None])

    for case_id, case in generate(count, seed=seed):
        opportunity, account, market = case["opportunity"], case["account"], case["market"]
        if rng.random() < 0.3:
            account.pop("profit_level")
            account["profit_margin"] = rng.choice([-0.2, -0.0001, 0, 0.05, 0.1, 0.2, 0.3, 0.45])
        opportunity["transitional"] = maybe([True, False])
        market["relative_strength"] = maybe(["stronger", "equal", "weaker"])
        market["competitor_style"] = maybe(["calm", "fierce", "random"])
        market["competition_focus"] = maybe(["key_customers_and_halls", "market_development"])
        market["offering"] = maybe(["high_tech", "integrated_solution", "general_service"])
        market["customer_size"] = maybe(["large_system", "small_medium"])
        market["new_service"] = maybe([True, False])
        if rng.random() < 0.2:  # exactly on a funnel boundary, given or derived
            weeks = rng.choice([-1, 0, 2, 2.5, 4, 6, 8, 10, 10.5])
            opportunity.pop("close_date", None)
            opportunity["weeks_to_close"] = weeks
        if rng.random() < 0.1:  # amount class boundaries, and a zero target (no share)
            opportunity["period_target"] = rng.choice([0, 1_000_000])
            opportunity["amount"] = rng.choice([0, 100_000, 300_000, 299_999.99])
        if rng.random() < 0.1:
            opportunity["amount_share"] = rng.choice([0.1, 0.3, 0.05])
        if "attractiveness_score" in account and rng.random() < 0.2:
            account["attractiveness_score"] = rng.choice([59, 60, 61])
            account["advantage_score"] = rng.choice([59, 60, 61])
        if rng.random() < 0.1:
            opportunity.pop("win_rate", None)
            opportunity.pop("milestones", None)
        elif rng.random() < 0.2:  # a CRM's rate beside the milestones, or milestones alone
            opportunity["win_rate"] = maybe([0, 20, 40, 60, 80])
            opportunity["milestones"] = rng.choice([[], sorted(LEVEL_20), sorted(LEVEL_20 | LEVEL_40)])
        if rng.random() < 0.3:  # in its stage for a while: given, derived, or on the 8-week boundary
            if rng.random() < 0.5:
                opportunity["weeks_in_stage"] = rng.choice([0, 7.9999, 8, 8.0001, 30])
            else:
                opportunity["stage_entered_date"] = rng.choice(["2026-01-05", "2026-09-25", "2026-10-02", "2026-10-01"])
        for obj, key in (
            (opportunity, "damage"),
            (opportunity, "close_date"),
            (account, "regularity"),
            (account, "potential"),
            (account, "contact_state"),
            (account, "roles_known"),
            (account, "attractiveness"),
            (account, "advantage_score"),
            (market, "stance"),
            (market, "internal"),
        ):
            if rng.random() < 0.05:
                obj.pop(key, None)
        for name in ("opportunity", "account", "market"):
            if rng.random() < 0.01:
                del case[name]
        yield case_id, case


def _same(a: Any, b: Any) -> bool:
    # == alone would pass 1 for True and 6 for 6.0; repr also tells types and key order apart.
    return bool(a == b) and repr(a) == repr(b)


def check(count: int, cases: str = "generated") -> dict[str, Any]:
    """Compare course() with our engine over ``count`` cases; the mismatches, and parameter drift."""
    from bench.cases import AS_OF, generate
    from engine import CaseError, Evaluator, compile_playbook, load_playbook
    from engine.conditions import atoms_of
    from engine.model import Decision

    playbook = load_playbook(str(COURSE))
    # the thresholds only group decisions read (per owner, region, ...) are no part of a case
    per_group = {
        name
        for level in playbook.groups.values()
        for part in (*level.playbook.decisions.values(), *level.playbook.rules)
        for when in ([row.when for row in part.rows] if isinstance(part, Decision) else [part.when])
        for atom in atoms_of(when)
        for name in atom.params
        if name
    }
    # nor the durations only the work an action files reads (when it is due, how often, when it goes up)
    work_only = {
        duration.parameter
        for action in playbook.actions.values()
        if action.work is not None
        for duration in (
            action.work.due.offset if action.work.due else None,
            action.work.every,
            action.work.escalate.after if action.work.escalate else None,
        )
        if duration is not None and duration.parameter
    }
    drift = {
        name: {"playbook": p.value, "handwritten": PARAMETERS.get(name)}
        for name, p in playbook.parameters.items()
        if not _same(PARAMETERS.get(name), p.value)
        and not ((name in per_group or name in work_only) and name not in PARAMETERS)
    }
    source = list(generate(count) if cases == "generated" else varied(count))
    mismatches: list[dict[str, Any]] = []
    with compile_playbook(playbook) as compiled:
        for (case_id, case), result in zip(source, Evaluator(compiled).evaluate(source, AS_OF), strict=True):
            decisions, recs = course(case, AS_OF)
            if isinstance(result, CaseError):
                mismatches.append({"case": case_id, "engine": f"error {result.code}: {result.message}"})
                continue
            ours = [(rec["id"], rec["params"]) for rec in result.recommendations]
            if _same(decisions, result.decisions) and _same(recs, ours):
                continue
            diff: dict[str, Any] = {"case": case_id}
            for name in dict.fromkeys([*result.decisions, *decisions]):
                if not _same(decisions.get(name, "<absent>"), result.decisions.get(name, "<absent>")):
                    diff.setdefault("decisions", {})[name] = {
                        "engine": result.decisions.get(name, "<absent>"),
                        "handwritten": decisions.get(name, "<absent>"),
                    }
            if not _same(recs, ours):
                diff["recommendations"] = {"engine": ours, "handwritten": recs}
            mismatches.append(diff)
    return {"cases": count, "kind": cases, "mismatches": len(mismatches), "first": mismatches[:5], "drift": drift}


# ---------------------------------------------------------------------------------------------
# Timing


def run(count: int, repeat: int = 3) -> dict[str, Any]:
    """Cases/s of course() and of our Evaluator over the same ``count`` generated cases (best of ``repeat``)."""
    from bench.cases import AS_OF, generate
    from engine import CaseError, Evaluator, compile_playbook, load_playbook

    cases = list(generate(count))  # generated once, outside every timed loop
    hand: list[float] = []
    ours: list[float] = []
    errors = questions = 0
    with compile_playbook(load_playbook(str(COURSE))) as compiled:
        for _ in range(repeat):  # interleaved, so a noisy spell on the machine hits both
            function = course
            started = time.perf_counter()
            for _case_id, case in cases:
                function(case, AS_OF)
            hand.append(time.perf_counter() - started)

            evaluator = Evaluator(compiled)  # fresh answer memory: each run pays its durable-rules questions
            errors = 0
            asked = compiled.questions_asked  # the count is the compiled playbook's, over every evaluator
            started = time.perf_counter()
            for item in evaluator.evaluate(cases, AS_OF):
                if isinstance(item, CaseError):
                    errors += 1
            ours.append(time.perf_counter() - started)
            questions = compiled.questions_asked - asked

    def figures(seconds: list[float]) -> dict[str, Any]:
        best = min(seconds)
        return {
            "seconds": round(best, 3),
            "cases_per_second": round(count / best),
            "runs_seconds": [round(s, 3) for s in seconds],
        }

    hand_fig, ours_fig = figures(hand), figures(ours)
    return {
        "cases": count,
        "repeat": repeat,
        "handwritten": hand_fig,
        "engine": {**ours_fig, "errors": errors, "durable_questions": questions},
        "ratio_ours_over_handwritten": round(ours_fig["cases_per_second"] / hand_fig["cases_per_second"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", type=int, default=20_000, help="cases for the correctness check (0: skip)")
    parser.add_argument("--cases", type=int, default=100_000, help="cases for the timing (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each; the best counts")
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()

    checks = []
    if args.check:
        for kind in ("generated", "varied"):
            outcome = check(args.check, kind)
            checks.append(outcome)
            print(f"correctness, {kind} cases: {outcome['cases']} compared, {outcome['mismatches']} mismatches")
            for name, values in outcome["drift"].items():
                print(f"  parameter drift: {name}: playbook {values['playbook']!r}, here {values['handwritten']!r}")
            for mismatch in outcome["first"]:
                print("  " + json.dumps(mismatch, ensure_ascii=False, default=str))

    timing = None
    if args.cases:
        timing = run(args.cases, args.repeat)
        print(f"\ntiming: {timing['cases']} generated cases, best of {timing['repeat']}")
        print(f"{'':<14} {'seconds':>9} {'cases/s':>11}   runs (s)")
        for label, key in (("hand-written", "handwritten"), ("ours", "engine")):
            fig = timing[key]
            print(f"{label:<14} {fig['seconds']:>9} {fig['cases_per_second']:>11}   {fig['runs_seconds']}")
        ratio = timing["ratio_ours_over_handwritten"]
        print(f"ours/hand-written (cases/s): {ratio}  (hand-written is {1 / ratio:.1f}× faster)")
        engine = timing["engine"]
        print(f"engine errors: {engine['errors']}, durable-rules questions: {engine['durable_questions']}")

    result = {
        "load_average_before": load_before,
        "playbook": str(COURSE),
        "engine_mode": "Evaluator.evaluate, trace steps recorded (not expanded), no to_json",
        "checks": checks,
        "timing": timing,
    }
    write_json(result, "handwritten", args.json)
    if any(c["mismatches"] or c["drift"] for c in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
