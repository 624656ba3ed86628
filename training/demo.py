"""``triage demo``: synthetic tickets, training, a served model and three scored tickets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

DEMO_TICKETS = (
    {
        "ticket_id": "DEMO-1",
        "created_at": "2025-12-01T09:12:00",
        "description": "12月1日09:05，ERP系统全部用户无法登录，页面报500错误，应用服务器宕机",
        "department": "技术支持部",
        "channel": "电话",
        "system": "ERP",
    },
    {
        "ticket_id": "DEMO-2",
        "created_at": "2025-12-11T14:30:00",
        "description": "坐席把客户工单错误指派给了网络组，客户重复来电催办",
        "department": "客户服务部",
        "channel": "网页",
        "system": "CRM",
    },
    {
        "ticket_id": "DEMO-3",
        "created_at": "2025-12-24T20:45:00",
        "description": "运营商专线中断，外部支付接口调用超时，订单无法提交",
        "department": "运维部",
        "channel": "监控告警",
        "system": "计费系统",
    },
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server at {base} was not ready after {timeout:.0f} s")


def summarize(answer: dict) -> str:
    category = answer["category"]
    cause = answer["root_causes"][0] if answer.get("root_causes") else None
    lines = [
        f"{answer.get('ticket_id')}: {category['name']} ({category['code']}) "
        f"p={category['probability']:.2f}"
        + ("  [needs review]" if answer.get("needs_review") else ""),
    ]
    if cause:
        lines.append(f"  root cause: {cause['name']} p={cause['probability']:.2f}")
        if cause.get("measures"):
            lines.append(f"  measure: {cause['measures'][0]}")
    if answer.get("escalation"):
        lines.append(f"  escalation: p={answer['escalation']['probability']:.2f}")
    return "\n".join(lines)


def run_demo(out_dir: Path, rows: int = 3000, model_name: str = "ticket-triage-demo") -> list[dict]:
    """Generate data, train and register, serve, score the demo tickets, stop the server."""
    from .demo_data import write_demo_data
    from .train import train

    out_dir.mkdir(parents=True, exist_ok=True)
    data = write_demo_data(rows, out_dir / "tickets.csv", seed=0)
    print(f"wrote {rows} synthetic tickets to {data}", flush=True)
    result = train(data, None, model_name=model_name)
    for name, values in result.metrics.items():
        if "macro_f1" in values:
            print(f"{name}: macro-F1 {values['macro_f1']:.3f}", flush=True)
    print(f"registered {model_name} version {result.version} ({', '.join(result.aliases)})", flush=True)
    # The server loads the registered copy.
    result.remove_files()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TRIAGE_MODEL_URI": f"models:/{model_name}/{result.version}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    try:
        wait_ready(base, server)
        answers = []
        for ticket in DEMO_TICKETS:
            response = httpx.post(f"{base}/v1/score", json=ticket, timeout=30)
            response.raise_for_status()
            answers.append(response.json())
        print()
        for answer in answers:
            print(summarize(answer))
        (out_dir / "answers.json").write_text(
            json.dumps(answers, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        return answers
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
