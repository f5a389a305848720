"""The code blocks of docs/method.md marked ``<!-- tested: tests/test_docs_examples.py -->`` run as
written, on the tiny Llama they build (issue 26 item 9): the doc and its test cannot drift apart."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "method.md"
MARK = "<!-- tested: tests/test_docs_examples.py -->"


def tested_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(re.escape(MARK) + r"\s*```python\n(.*?)```", text, flags=re.S)


def test_the_doc_has_the_two_llama_examples():
    blocks = tested_blocks()
    assert len(blocks) == 2
    assert "LlamaForCausalLM" in blocks[0] and "ctl.step(step)" in blocks[0]
    assert "Trainer(" in blocks[1] and "add_pld_callback(trainer)" in blocks[1]


def test_plain_loop_example_runs_and_drops_blocks(capsys):
    import torch

    torch.manual_seed(0)
    ns: dict = {}
    exec(compile(tested_blocks()[0], f"{DOC}:plain-loop", "exec"), ns)
    ctl, model = ns["ctl"], ns["model"]
    assert ctl.theta < 1.0  # θ moved: the controller was stepped
    assert type(model.model.layers[0]).__name__ == "LlamaDecoderLayer"  # the original blocks back
    from pldrop.surgery import get_controller

    assert get_controller(model) is None  # remove_pld ran: the untouched model is back
    assert re.search(r"step 19: θ 0\.\d{3}, blocks run", capsys.readouterr().out)


def test_trainer_example_runs_and_logs_theta(tmp_path, capsys):
    import torch

    torch.manual_seed(0)
    ns: dict = {"out_dir": str(tmp_path / "trainer")}
    exec(compile(tested_blocks()[1], f"{DOC}:trainer", "exec"), ns)
    thetas = [r["pld/theta"] for r in ns["trainer"].state.log_history if "pld/theta" in r]
    # logged at steps 5 and 10; with γ = 100/T θ is at θ̄ after ~5 % of the steps
    assert len(thetas) == 2 and all(t == pytest.approx(0.5, abs=1e-3) for t in thetas)
    assert ns["trainer"].state.global_step == 10
