"""One sampler batch, in process, on the real sandbox: the `group` baseline and `skip_zero_returns`.

The programs are scripted (a reference solution, or a broken copy of it) so that each problem's group has
a known mix of outcomes; everything after generation (sandbox, rewards, returns, trajectories) is real."""
from __future__ import annotations

import pytest

from actors.sampler import Sampler
from configs import load_config
from models.generation import GeneratedProgram
from sandbox import LocalSandboxPool
from tasks import load_problems

SAMPLES = 4
# per problem: which of its samples are the reference solution (the rest return a wrong answer)
PASSING = [(True, False, False, False), (True, True, True, True), (False, False, False, False)]


@pytest.fixture
def scripted():
    return load_problems("synthetic", split="train", limit=3)


def scripted_generate(problems, tokenizer):
    """A generation backend's `generate` that writes each problem's reference or a broken copy of it."""
    def generate(prompts, *, num_samples, greedy=False, **_):
        out = []
        for i, problem in enumerate(problems[: len(prompts)]):
            reference = problem.solutions[0][len(problem.program_prefix):]
            body = reference.rstrip("\n")
            wrong = body[: len(body) - len(body.lstrip())] + "return None\n"  # runs, answers wrongly
            for j in range(num_samples):
                text = reference if (greedy or PASSING[i][j]) else wrong
                ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
                out.append(GeneratedProgram(i, ids, [-0.5] * len(ids), text, False))
        return out
    return generate


def make_sampler(tmp_path, problems, *extra: str) -> tuple[Sampler, list[int]]:
    cfg = load_config("local", [f"--run.output_dir={tmp_path}", f"--sampler.samples_per_problem={SAMPLES}",
                                f"--sampler.problems_per_batch={len(problems)}", "--reward.adaptive=false", *extra])
    pool = LocalSandboxPool(1, cfg.sandbox)
    graded: list[int] = []
    run = pool.run
    pool.run = lambda jobs, **kw: graded.append(len(jobs)) or run(jobs, **kw)
    sampler = Sampler(cfg, "test", problems, None, pool, None)
    sampler.backend.generate = scripted_generate(problems, sampler.backend.tokenizer)
    sampler.order["all"] = [2, 1, 0]  # popped from the end
    return sampler, graded


def test_group_baseline_is_the_mean_of_the_other_samples_and_needs_no_greedy_decode(tmp_path, scripted):
    sampler, graded = make_sampler(tmp_path, scripted, "--reward.baseline=group")
    trajectories = sampler.sample_batch()
    assert graded == [len(scripted) * SAMPLES]  # no greedy decodes graded: the group baseline does not use them
    assert len(trajectories) == len(scripted) * SAMPLES
    for i, problem in enumerate(scripted):
        group = [t for t in trajectories if t.problem_id == problem.problem_id]
        assert [t.outcome == "passed" for t in group] == list(PASSING[i])
        for t in group:
            others = [o.reward for o in group if o is not t]
            assert t.baseline_reward == pytest.approx(sum(others) / len(others))
        assert sum(t.reward - t.baseline_reward for t in group) == pytest.approx(0.0)
    first = [t for t in trajectories if t.problem_id == scripted[0].problem_id]
    assert first[0].returns[0] == pytest.approx(1.3) and first[1].returns[0] == pytest.approx(-1.3 / 3)


def test_skip_zero_returns_leaves_out_problems_whose_samples_all_scored_the_same(tmp_path, scripted):
    sampler, _ = make_sampler(tmp_path, scripted, "--reward.baseline=group", "--sampler.skip_zero_returns=true")
    trajectories = sampler.sample_batch()
    assert {t.problem_id for t in trajectories} == {scripted[0].problem_id}  # the only mixed group
    assert len(trajectories) == SAMPLES and all(any(t.returns) for t in trajectories)
    assert sampler.status().samples == len(scripted) * SAMPLES  # statistics still count every program


def test_greedy_baseline_grades_one_greedy_decode_per_problem(tmp_path, scripted):
    sampler, graded = make_sampler(tmp_path, scripted, "--reward.baseline=greedy")
    trajectories = sampler.sample_batch()
    assert graded == [len(scripted) * (SAMPLES + 1)]
    assert {t.baseline_reward for t in trajectories} == {1.0}  # every scripted greedy decode is the reference


def test_baseline_cap_keeps_solved_problems_reinforced(tmp_path, scripted):
    sampler, _ = make_sampler(tmp_path, scripted, "--reward.baseline=group", "--reward.baseline_cap=0")
    first, solved, unsolved = ([t.returns[0] for t in sampler.sample_batch() if t.problem_id == p.problem_id]
                               for p in scripted)
    assert solved == pytest.approx([1.0] * SAMPLES)  # the group baseline alone would give 0
    assert unsolved == pytest.approx([0.0] * SAMPLES)  # each failure scored what the others did
    assert first == pytest.approx([1.3, -0.3, -0.3, -0.3])  # a failure beside a pass: at most 0 as baseline


def test_run_generates_the_next_batch_while_the_last_is_graded_and_held(tmp_path, scripted):
    """`run` overlaps generation with grading and pushing, but hands a batch over only once the previous one is
    in the buffer (back-pressure still bounds how far it runs ahead), and tags each batch with the weight
    version it was generated with."""
    import threading
    import time

    sampler, _ = make_sampler(tmp_path, scripted, "--reward.baseline=group")
    events: list[tuple[str, int, float]] = []
    generate = sampler.backend.generate

    def timed_generate(prompts, **kw):
        events.append(("generate", sampler.version, time.perf_counter()))
        time.sleep(0.1)
        return generate(prompts, **kw)

    def held_put(trajectories):
        events.append(("put", trajectories[0].policy_version, time.perf_counter()))
        assert threading.current_thread() is not threading.main_thread()  # the grading thread pushes
        time.sleep(0.4)  # back-pressure holds this batch
        events.append(("accepted", trajectories[0].policy_version, time.perf_counter()))
        return len(trajectories)

    versions = iter(range(1, 100))

    def refresh_weights():  # a new version before every batch; `latest` is asked while a put is held too
        sampler.version = next(versions)
        return True

    sampler.backend.generate, sampler._put, sampler.refresh_weights = timed_generate, held_put, refresh_weights
    sampler.run(max_batches=3)
    kinds = [kind for kind, _, _ in events]
    assert kinds.count("generate") == 3 and kinds.count("accepted") == 3
    puts = [e for e in events if e[0] == "put"]
    accepted = [e for e in events if e[0] == "accepted"]
    generated = [e for e in events if e[0] == "generate"]
    assert generated[1][2] < accepted[0][2]  # batch 2 was generated while batch 1 was held
    assert puts[1][2] >= accepted[0][2] and puts[2][2] >= accepted[1][2]  # but put only once batch 1 was in
    assert [e[1] for e in puts] == [e[1] for e in generated]  # each batch carries the version it was made with
    assert sampler.status().samples == 3 * len(scripted) * SAMPLES
