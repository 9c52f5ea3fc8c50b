"""Guided GRPO: recorded completions that worked enter groups where no sample finds them."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from agentgym_runtime.cli.progress import Report
from agentgym_runtime.trainers.scheduler.scheduler import learned_nothing

torch = pytest.importorskip("torch")

from agentgym_runtime.trainers.grpo import (  # noqa: E402
    GRPOConfig,
    _rows_of_informative_groups,
    grpo_loss,
    grpo_train,
    insert_guides,
    save_adapter,
)
from agentgym_runtime.trainers.toy_model import WordTokenizer, tiny_llama, toy_grpo_config  # noqa: E402


def test_a_guide_replaces_the_worst_sample_only_where_no_sample_does_as_well() -> None:
    # Two groups of three: the first has no sample as good as its guide, the second has one.
    sequences = torch.tensor([[7, 2, 1], [7, 3, 1], [7, 4, 1], [8, 2, 1], [8, 5, 1], [8, 6, 1]])
    mask = torch.ones(6, 2)
    rewards = [0.1, 0.0, 0.2, 1.0, 0.0, 0.0]
    guides = [[([9, 9, 9, 1], 1.0)], [([9, 1], 1.0)]]
    seq, new_mask, new_rewards, on_policy = insert_guides(sequences, mask, 1, rewards, guides, 3, 0)
    assert on_policy == [True, False, True, True, True, True]
    assert new_rewards == [0.1, 1.0, 0.2, 1.0, 0.0, 0.0]
    # Widened to the guide's 4 tokens; the other rows are padded and masked.
    assert seq.tolist()[1] == [7, 9, 9, 9, 1]
    assert seq.tolist()[0] == [7, 2, 1, 0, 0]
    assert new_mask.tolist()[1] == [1.0, 1.0, 1.0, 1.0]
    assert new_mask.tolist()[0] == [1.0, 1.0, 0.0, 0.0]


def test_guides_per_group_are_capped_and_one_on_policy_sample_always_stays() -> None:
    sequences = torch.tensor([[7, 2, 1], [7, 3, 1]])
    mask = torch.ones(2, 2)
    guides = [[([9, 1], 1.0), ([8, 1], 0.9), ([6, 1], 0.8)]]
    _, _, rewards, on_policy = insert_guides(sequences, mask, 1, [0.0, 0.0], guides, 2, 0, max_guides=3)
    assert on_policy.count(False) == 1  # a group of two keeps one of its own samples
    assert rewards == [1.0, 0.0]
    _, _, _, none = insert_guides(sequences, mask, 1, [0.0, 0.0], guides, 2, 0, max_guides=0)
    assert none == [True, True]


def test_the_kl_term_counts_on_policy_samples_only() -> None:
    logps = torch.zeros(2, 3)
    ref = torch.full((2, 3), -1.0)  # k3 KL per token: e^-1 + 1 - 1 = 0.3679
    advantages = torch.zeros(2)
    mask = torch.ones(2, 3)
    both, _ = grpo_loss(logps, logps, ref, advantages, mask, clip_epsilon=0.2, beta=1.0)
    one, stats_one = grpo_loss(
        logps, logps, ref, advantages, mask, clip_epsilon=0.2, beta=1.0, on_policy=torch.tensor([1.0, 0.0])
    )
    assert float(both) == pytest.approx(0.36788, abs=1e-4)
    assert float(one) == pytest.approx(0.36788 / 2, abs=1e-4)  # the guide row adds no KL
    assert stats_one["kl"] == pytest.approx(0.36788, abs=1e-4)  # mean KL over on-policy tokens


def _toy() -> tuple[WordTokenizer, list[str], list[str]]:
    tokenizer = WordTokenizer(["a", "b", "c", "d", "e", "f", "g", "h"])
    rng = random.Random(0)
    letters = ["a", "b", "c", "d", "e", "f"]
    prompts = list(dict.fromkeys(" ".join(rng.choice(letters) for _ in range(3)) for _ in range(40)))
    return tokenizer, prompts[:16], prompts[16:22]


#: 50 rounds of 4 prompts x 4 samples, LoRA on the toy Llama's attention and MLP output and head.
TOY_CONFIG = toy_grpo_config(steps=50, group_size=4, max_new_tokens=4, learning_rate=5e-3, eval_samples=8)


def _model(tokenizer: WordTokenizer) -> object:
    return tiny_llama(len(tokenizer.vocab))


def test_guides_teach_a_call_that_sampling_never_finds_and_plain_grpo_cannot(tmp_path: Path) -> None:
    # The right completion is one exact 3-word sequence: an untrained 10-token model samples it
    # (with its EOS) about once in 10^4 tries, so every group's rewards are equal and plain GRPO's
    # advantages are all zero. The recorded completion that worked is the guide.
    tokenizer, train, heldout = _toy()

    def reward(index: int, completion: str) -> float:
        return 1.0 if completion == "g h c" else 0.0

    config = TOY_CONFIG
    # ``continued_steps`` only applies to a job that trains on from an adapter: this one runs ``steps``.
    fresh = config.model_copy(update={"continued_steps": 1})
    _, plain = grpo_train(_model(tokenizer), tokenizer, train, reward, fresh, heldout_prompts=heldout)
    assert plain["steps"] == config.steps
    trained, guided = grpo_train(
        _model(tokenizer), tokenizer, train, reward, config, heldout_prompts=heldout, guides=lambda i: ["g h c"]
    )
    assert plain["guided_samples"] == 0
    assert plain["skipped_groups"] == config.steps * config.prompts_per_step  # no group ever had signal
    assert plain["heldout_reward_before"] == 0.0
    assert plain["heldout_reward_after"] == 0.0  # nothing to learn from equal rewards
    assert guided["guided_samples"] > 0
    assert guided["heldout_reward_after"] >= 0.5  # 0.90 with these seeds
    # The train reward reports the policy's own samples, never the guides.
    assert guided["train_reward_first_step"] == 0.0

    # The next run continues from the saved adapter (the live policy's): it starts where this one ended.
    saved = save_adapter(trained, tmp_path / "v1")
    _, continued = grpo_train(
        _model(tokenizer),
        tokenizer,
        train,
        reward,
        config.model_copy(update={"steps": 500, "continued_steps": 1}),
        heldout_prompts=heldout,
        init_adapter=saved,
    )
    assert continued["steps"] == 1  # ``continued_steps``, not the 500 of a fresh job
    assert continued["continued_from"] == str(saved)
    assert continued["heldout_reward_before"] == guided["heldout_reward_after"]
    assert guided["continued_from"] is None


def test_prompt_weights_are_checked() -> None:
    tokenizer, train, _ = _toy()
    with pytest.raises(ValueError, match="one non-negative weight per train prompt"):
        grpo_train(
            _model(tokenizer),
            tokenizer,
            train,
            lambda i, c: 0.0,
            GRPOConfig(steps=1, max_new_tokens=2),
            prompt_weights=[1.0],
        )


def test_groups_whose_rewards_are_all_equal_are_left_out_of_the_step() -> None:
    # Groups of three: all right, mixed (a guide entered), all wrong, mixed by a hair.
    rewards = [1.0, 1.0, 1.0, 0.1, 1.0, 0.1, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5000001]
    assert _rows_of_informative_groups(rewards, 3) == [3, 4, 5, 9, 10, 11]
    assert _rows_of_informative_groups([0.2, 0.2], 2) == []


def test_with_skipping_off_uniform_groups_still_take_a_step() -> None:
    tokenizer, train, _ = _toy()
    config = GRPOConfig(steps=2, group_size=2, prompts_per_step=2, max_new_tokens=2, skip_uniform_groups=False)
    _, metrics = grpo_train(_model(tokenizer), tokenizer, train, lambda i, c: 0.0, config)
    assert metrics["skipped_groups"] == 0
    # Nothing held out: no held-out score rather than a 0 (the scheduler read 0 -> 0 as "nothing
    # learnt" and registered no candidate of a job run with heldout_fraction=0).
    assert (metrics["heldout_reward_before"], metrics["heldout_reward_after"]) == (None, None)
    assert learned_nothing(metrics) is None
    # final_kl is set by optimiser steps only (None when every round was skipped): the steps ran, with
    # the KL term alone acting, and a fresh adapter equals the base, so the KL stays 0.
    assert metrics["final_kl"] == pytest.approx(0.0, abs=1e-6)


def test_the_loss_keeps_the_full_batch_scale_when_groups_are_left_out() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.25]]))
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    full, _ = grpo_loss(logps, logps, logps, advantages, mask, clip_epsilon=0.2, beta=0.0)
    assert float(full) == pytest.approx(0.0)  # ratio 1: -(1 * 1) - (1 * -1), over two sequences
    first, _ = grpo_loss(logps[:1], logps[:1], logps[:1], advantages[:1], mask[:1], clip_epsilon=0.2, beta=0.0)
    kept, _ = grpo_loss(
        logps[:1], logps[:1], logps[:1], advantages[:1], mask[:1], clip_epsilon=0.2, beta=0.0, batch_size=4
    )
    assert float(first) == pytest.approx(-1.0)
    assert float(kept) == pytest.approx(-0.25)  # the same row, as one of four sequences


def test_eval_every_returns_the_best_measured_round_and_never_one_worse_than_the_start() -> None:
    tokenizer, train, heldout = _toy()
    config = TOY_CONFIG.model_copy(update={"steps": 20, "eval_every": 5})

    def wanted(index: int, completion: str) -> float:
        return 1.0 if completion == "g h c" else 0.0

    # Training towards what the held-out reward wants: a later round is kept, and it is the best measured.
    messages: list[str] = []
    _, helped = grpo_train(
        _model(tokenizer),
        tokenizer,
        train,
        wanted,
        config,
        heldout_prompts=heldout,
        guides=lambda i: ["g h c"],
        progress=lambda fraction, message: messages.append(message),
    )
    assert helped["best_step"] in (5, 10, 15, 20)
    # Each measured round is in the progress, with the best so far (the last round is the "after").
    measured = [m for m in messages if "held-out score" in m]
    assert [m.split(":")[0] for m in measured] == ["round 5", "round 10", "round 15"]
    best = max(float(m.split("held-out score ")[1].split()[0]) for m in measured)
    assert f"(best {max(best, helped['heldout_reward_before']):.3f}" in measured[-1]
    assert all(Report.parse(0.5, m).reward is None for m in measured)  # not read as the train reward
    assert helped["heldout_reward_after"] >= helped["heldout_reward_last_step"]
    assert helped["heldout_reward_after"] > helped["heldout_reward_before"]

    # Training towards the opposite of what the held-out reward wants: the start is kept, weights untouched.
    def unwanted(index: int, completion: str) -> float:
        return 0.0 if completion == "g h c" else 1.0

    model, hurt = grpo_train(
        _model(tokenizer),
        tokenizer,
        train,
        wanted,
        config,
        heldout_prompts=heldout,
        heldout_reward=unwanted,
        guides=lambda i: ["g h c"],
    )
    assert hurt["best_step"] == 0
    assert hurt["heldout_reward_after"] == hurt["heldout_reward_before"]
    assert hurt["heldout_reward_last_step"] < hurt["heldout_reward_before"]
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.detach().abs().max()) == 0.0 for p in lora_b)  # a fresh adapter is zero in B


def test_completion_logprobs_with_the_head_over_the_completion_only_equal_the_full_heads() -> None:
    from agentgym_runtime.trainers.grpo_math import _positions, _token_logprobs

    model = tiny_llama(12).eval()
    # Two rows, the first left-padded by two: prompt length 4, completion length 3.
    sequences = torch.tensor([[0, 0, 5, 6, 7, 8, 1], [4, 5, 6, 7, 9, 10, 11]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        full = model(input_ids=sequences, attention_mask=attention, position_ids=_positions(attention)).logits
        expected = torch.gather(full[:, 3:-1].log_softmax(-1), 2, sequences[:, 4:].unsqueeze(-1)).squeeze(-1)
        got = _token_logprobs(model, sequences, attention, 4)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_inner_steps_reuse_the_first_steps_logprobs_as_the_old_ones_and_learn_the_same() -> None:
    # Without dropout the weights that sampled are the first inner step's weights, so _update takes
    # the old log-probabilities from that step's own pass: three passes a round at two inner steps
    # (reference, then one per step), not four, and the same update as computing them apart.
    import copy

    from peft import LoraConfig, get_peft_model

    from agentgym_runtime.trainers.grpo import _update
    from agentgym_runtime.trainers.grpo_math import _token_logprobs

    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(tiny_llama(12), lora)
    twin = copy.deepcopy(model)
    sequences = torch.tensor([[0, 4, 5, 6, 7, 8, 1], [4, 5, 6, 7, 9, 10, 11], [3, 5, 6, 7, 2, 8, 1]])
    attention = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    mask = torch.ones(3, 3)
    advantages, on_policy = [1.0, -0.5, -0.5], [True, True, True]
    config = toy_grpo_config(inner_steps=2, beta=0.05)
    passes: list[int] = []
    model.base_model.model.register_forward_pre_hook(lambda *_: passes.append(1))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    stats = _update(model, optimiser, sequences, attention, mask, 4, advantages, on_policy, 3, config, "cpu")
    assert len(passes) == 3

    # The same round computed the long way: the old log-probabilities from a pass of their own.
    twin_optimiser = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        old = _token_logprobs(twin, sequences, attention, 4)
        with twin.disable_adapter():
            ref = _token_logprobs(twin, sequences, attention, 4)
    twin.train()
    for _ in range(2):
        twin_optimiser.zero_grad()
        logps = _token_logprobs(twin, sequences, attention, 4)
        loss, twin_stats = grpo_loss(
            logps,
            old,
            ref,
            torch.tensor(advantages),
            mask,
            clip_epsilon=config.clip_epsilon,
            beta=config.beta,
            on_policy=torch.ones(3),
            batch_size=3,
        )
        loss.backward()
        twin_optimiser.step()
    learned = {n: p for n, p in model.named_parameters() if "lora_" in n}
    expected = {n: p for n, p in twin.named_parameters() if "lora_" in n}
    assert learned.keys() == expected.keys() and len(learned) == 8
    for name, value in learned.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6)
    assert stats == pytest.approx(twin_stats, abs=1e-6)


def test_dropout_is_detected_in_the_modules_and_the_attention() -> None:
    from peft import LoraConfig, get_peft_model

    from agentgym_runtime.trainers.grpo import _has_dropout

    assert not _has_dropout(tiny_llama(12))
    with_lora_dropout = get_peft_model(tiny_llama(12), LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj"]))
    assert _has_dropout(with_lora_dropout)
    attention_dropout = tiny_llama(12)
    attention_dropout.config.attention_dropout = 0.1
    assert _has_dropout(attention_dropout)


def test_settled_prompts_are_drawn_less_until_a_group_of_them_shows_a_difference() -> None:
    # Prompts 0-7 earn the same reward whatever the completion (settled after their first group);
    # 8-15 earn one that differs with the completion, so their groups keep showing a difference.
    tokenizer, train, _ = _toy()
    draws: dict[bool, list[int]] = {}
    for weight in (1.0, 0.1):
        seen: list[int] = []

        def reward(index: int, completion: str, seen: list[int] = seen) -> float:
            seen.append(index)
            return 1.0 if index < 8 else (sum(map(ord, completion)) % 97) / 97

        config = GRPOConfig(steps=20, group_size=4, prompts_per_step=4, max_new_tokens=3, settled_prompt_weight=weight)
        grpo_train(_model(tokenizer), tokenizer, train, reward, config)
        draws[weight < 1.0] = seen[:: config.group_size]  # one reward call per sample: a draw per group
    assert len(draws[False]) == len(draws[True]) == 80
    settled_share = {on: sum(i < 8 for i in picks) / len(picks) for on, picks in draws.items()}
    assert 0.35 < settled_share[False] < 0.65  # uniform draws: about half
    assert settled_share[True] < 0.2  # each settled prompt weighs 0.1 after its first group


def test_settled_prompt_weight_is_checked() -> None:
    with pytest.raises(ValueError, match="settled_prompt_weight"):
        GRPOConfig(settled_prompt_weight=0)
    with pytest.raises(ValueError, match="settled_prompt_weight"):
        GRPOConfig(settled_prompt_weight=1.5)


def _rounds_and_looks(calls: list[int], rounds: int, per_round: int, every: int, prompts: int) -> tuple[list[int], int]:
    """Split a job's reward calls into its rounds' draws (one per group) and its greedy looks' passes."""
    draws: list[int] = []
    looks = 0
    position = 0
    for round_ in range(1, rounds + 1):
        draws.extend(calls[position : position + per_round : 4])
        position += per_round
        if every and round_ % every == 0 and round_ < rounds:
            assert calls[position : position + prompts] == list(range(prompts))  # one greedy call per prompt, in order
            position += prompts
            looks += 1
    assert position == len(calls)
    return draws, looks


def test_refocus_draws_the_prompts_whose_greedy_completion_falls_short_more_often() -> None:
    # Prompts 0-7 earn 1 whatever the completion: greedy is never below their best. Prompts 8-15 earn
    # a reward that varies with the completion, so some sample beats the greedy one.
    tokenizer, train, _ = _toy()
    runs: dict[int, tuple[list[int], dict[str, object]]] = {}
    for every in (0, 10):
        calls: list[int] = []

        def reward(index: int, completion: str, calls: list[int] = calls) -> float:
            calls.append(index)
            return 1.0 if index < 8 else (sum(map(ord, completion)) % 97) / 97

        config = GRPOConfig(
            steps=40, group_size=4, prompts_per_step=4, max_new_tokens=3, refocus_every=every, refocus_weight=9.0
        )
        _, metrics = grpo_train(_model(tokenizer), tokenizer, train, reward, config)
        runs[every] = (calls, metrics)
    off_draws, off_looks = _rounds_and_looks(runs[0][0], 40, 16, 0, 16)
    on_draws, on_looks = _rounds_and_looks(runs[10][0], 40, 16, 10, 16)
    assert (off_looks, on_looks) == (0, 3)  # rounds 10, 20 and 30; none after the last round
    assert runs[0][1]["refocused_prompts"] == []
    # Only prompts 8-15 can fall short (here 6, 7 and 8 of them: one not drawn yet has no best to miss).
    refocused = runs[10][1]["refocused_prompts"]
    assert isinstance(refocused, list) and len(refocused) == 3 and all(5 <= n <= 8 for n in refocused)
    # After the first look each of prompts 8-15 that fell short weighs 9: ~9/10 of the draws, not ~1/2.
    share = {name: sum(i >= 8 for i in d[40:]) / len(d[40:]) for name, d in (("off", off_draws), ("on", on_draws))}
    assert share["off"] < 0.65
    assert share["on"] > 0.75


def test_refocus_marks_a_prompt_the_policy_unlearnt_and_one_below_its_guide() -> None:
    from agentgym_runtime.trainers import grpo

    config = GRPOConfig(refocus_every=5, refocus_weight=3.0)
    focus = torch.ones(3, dtype=torch.float64)
    best_seen = [float("-inf"), 0.8, float("-inf")]  # prompt 1: a sample earned 0.8

    def guides_of(index: int) -> list[tuple[list[int], float]]:
        return [([5, 1], 1.0)] if index == 2 else []  # prompt 2: a recorded call that earns 1

    assert grpo._refocus([1.0, 0.5, 0.0], config, focus, best_seen, guides_of) == 2
    assert focus.tolist() == [1.0, 3.0, 3.0]  # below a sample's 0.8; below the guide's 1
    assert best_seen == [1.0, 0.8, 1.0]
    # Next look: prompt 0 falls from its own greedy 1.0 (unlearnt); 1 and 2 reach their best.
    assert grpo._refocus([0.5, 0.8, 1.0], config, focus, best_seen, guides_of) == 1
    assert focus.tolist() == [3.0, 1.0, 1.0]
    assert best_seen == [1.0, 0.8, 1.0]


def test_refocus_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="refocus_every"):
        GRPOConfig(refocus_every=-1)
    with pytest.raises(ValueError, match="refocus_weight"):
        GRPOConfig(refocus_weight=0.5)


@pytest.mark.parametrize(
    ("schedule", "factors"),
    [
        ("constant", [1.0, 1.0, 1.0, 1.0]),
        ("linear", [1.0, 0.75, 0.5, 0.25]),
        ("cosine", [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2]),
    ],
)
def test_the_learning_rate_follows_the_schedule_round_by_round(
    schedule: str, factors: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every optimiser step of a round (two inner steps here) has the round's rate.
    rates: list[float] = []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):  # type: ignore[no-untyped-def]
            rates.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    tokenizer, train, _ = _toy()
    config = TOY_CONFIG.model_copy(
        update={"steps": 4, "inner_steps": 2, "lr_schedule": schedule, "skip_uniform_groups": False}
    )
    grpo_train(_model(tokenizer), tokenizer, train, lambda i, text: float(len(text)), config)
    assert rates == pytest.approx([5e-3 * f for f in factors for _ in range(2)], abs=1e-6)


def test_an_unknown_learning_rate_schedule_is_refused_with_the_choices() -> None:
    from pydantic import ValidationError

    from agentgym_runtime.trainers.grpo_math import lr_factor

    with pytest.raises(ValidationError, match="lr_schedule"):
        GRPOConfig(lr_schedule="step")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step': use 'constant', 'linear' or 'cosine'"):
        lr_factor("step", 0, 4)
    with pytest.raises(ValueError, match="total must be >= 1, got 0"):
        lr_factor("linear", 0, 0)
