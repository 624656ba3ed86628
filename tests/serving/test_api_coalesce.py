"""Coalescing of concurrent single-ticket requests into shared scorer calls."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.coalesce import Coalescer


class FakeScorer:
    """Records every call; answers after ``release`` is set; fails on 'bad' tickets."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()

    async def __call__(self, model, records, include):
        self.calls.append([r["ticket_id"] for r in records])
        await self.release.wait()
        if any(r["ticket_id"].startswith("bad") for r in records):
            raise RuntimeError("scorer failed")
        return [{"ticket_id": r["ticket_id"], "model": model, "include": include} for r in records]


async def gather_scores(coalescer, requests):
    """Start the first request, let its call begin, then queue the others."""
    tasks = [asyncio.create_task(coalescer.score(*requests[0]))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(coalescer.score(*request)) for request in requests[1:]]
    await asyncio.sleep(0)
    return tasks


def test_coalescer_batches_requests_queued_while_busy():
    async def run():
        scorer = FakeScorer()
        coalescer = Coalescer(scorer, slots=1)
        tasks = await gather_scores(
            coalescer, [("m", {"ticket_id": f"t{i}"}, ()) for i in range(5)]
        )
        await asyncio.sleep(0.01)
        scorer.release.set()
        return scorer, [await task for task in tasks]

    scorer, answers = asyncio.run(run())
    assert scorer.calls == [["t0"], ["t1", "t2", "t3", "t4"]]
    assert [a["ticket_id"] for a in answers] == ["t0", "t1", "t2", "t3", "t4"]


def test_coalescer_keeps_models_and_parts_apart():
    async def run():
        scorer = FakeScorer()
        coalescer = Coalescer(scorer, slots=1)
        requests = [
            ("old", {"ticket_id": "a"}, ()),
            ("old", {"ticket_id": "b"}, ()),
            ("new", {"ticket_id": "c"}, ()),
            ("old", {"ticket_id": "d"}, ("reasons",)),
            ("old", {"ticket_id": "e"}, ()),
        ]
        tasks = await gather_scores(coalescer, requests)
        await asyncio.sleep(0.01)
        scorer.release.set()
        return scorer, [await task for task in tasks]

    scorer, answers = asyncio.run(run())
    assert scorer.calls == [["a"], ["b", "e"], ["c"], ["d"]]
    assert [a["model"] for a in answers] == ["old", "old", "new", "old", "old"]
    assert answers[3]["include"] == ("reasons",)


def test_coalescer_isolates_failing_ticket():
    async def run():
        scorer = FakeScorer()
        coalescer = Coalescer(scorer, slots=1)
        tickets = ["first", "ok-1", "bad-1", "ok-2"]
        tasks = await gather_scores(coalescer, [("m", {"ticket_id": t}, ()) for t in tickets])
        await asyncio.sleep(0.01)
        scorer.release.set()
        return scorer, await asyncio.gather(*tasks, return_exceptions=True)

    scorer, results = asyncio.run(run())
    assert results[0]["ticket_id"] == "first"
    assert results[1]["ticket_id"] == "ok-1"
    assert isinstance(results[2], RuntimeError)
    assert results[3]["ticket_id"] == "ok-2"
    assert scorer.calls[1] == ["ok-1", "bad-1", "ok-2"]
    assert scorer.calls[2:] == [["ok-1"], ["bad-1"], ["ok-2"]]


def test_coalescer_limits_batch_size():
    async def run():
        scorer = FakeScorer()
        coalescer = Coalescer(scorer, slots=1, max_batch=3)
        tasks = await gather_scores(
            coalescer, [("m", {"ticket_id": f"t{i}"}, ()) for i in range(8)]
        )
        await asyncio.sleep(0.01)
        scorer.release.set()
        await asyncio.gather(*tasks)
        return scorer

    assert [len(call) for call in asyncio.run(run()).calls] == [1, 3, 3, 1]


@pytest.mark.parametrize("threads", [8])
def test_concurrent_requests_get_their_own_answers(open_client, threads, same_scores):
    tickets = [
        {"ticket_id": f"C-{i}", "description": text}
        for i, text in enumerate(
            ["数据库宕机", "用户误操作删除数据", "供应商线路中断", "网站被攻击", "打印机故障"] * 8
        )
    ]
    expected = {t["ticket_id"]: open_client.post("/v1/score", json=t).json() for t in tickets}
    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(lambda t: open_client.post("/v1/score", json=t).json(), tickets))
    for ticket, answer in zip(tickets, answers):
        assert answer["ticket_id"] == ticket["ticket_id"]
        same_scores(answer, expected[ticket["ticket_id"]])
    metrics = open_client.get("/metrics").text
    assert "triage_score_coalesced_tickets_count" in metrics
