"""The darts-rnn space: text data, the recurrent cell, its rule, every method's tiny search, retraining."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import pytest
import torch

from diffnas import api
from diffnas.catalog import resolve
from diffnas.data.text import EOS, TextStream, batchify, load_corpus, windows
from diffnas.engine.text import asgd_due
from diffnas.errors import ConfigError, DataError, GenotypeError
from diffnas.spaces import get_space, load_architecture
from diffnas.spaces.rnn import DARTS_V2, RNNGenotype
from diffnas.spaces.rnn.model import DerivedCell, LanguageModel

PTB_ZIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ptb.zip"
if not PTB_ZIP.is_file():
    PTB_ZIP = Path("/work/shared/data/ptb.zip")


def write_corpus(root, train="a b c\nb c a\nc a b d\n", valid="a b\nc\n", test="b a\n", names="{}.txt"):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (root / names.format(split)).write_text(text)
    return root


def toy_corpus(root, lines=240, seed=0):
    """A learnable toy language: words follow each other in a fixed cycle with a little noise."""
    g = torch.Generator().manual_seed(seed)
    vocab = [f"w{i}" for i in range(12)] + ["<unk>"]

    def text(n):
        out = []
        for _ in range(n):
            start = int(torch.randint(0, 12, (1,), generator=g))
            out.append(" ".join(vocab[(start + k) % 12] for k in range(6)))
        return "\n".join(out) + "\n"

    return write_corpus(root, text(lines), text(lines // 5), text(lines // 5))


# -- data ---------------------------------------------------------------------------------------
def test_reader_adds_eos_and_numbers_words_in_order(tmp_path):
    c = load_corpus("text", write_corpus(tmp_path))
    assert c.words == ["a", "b", "c", EOS, "d"]
    assert c.train.tolist() == [0, 1, 2, 3, 1, 2, 0, 3, 2, 0, 1, 4, 3]
    assert c.valid.tolist() == [0, 1, 3, 2, 3]


def test_mikolov_names_and_zip_without_macosx(tmp_path):
    folder = write_corpus(tmp_path / "f", names="ptb.{}.txt")
    assert load_corpus("ptb", folder).vocab_size == 5
    z = tmp_path / "ptb.zip"
    with zipfile.ZipFile(z, "w") as f:
        for p in folder.iterdir():
            f.write(p, p.name)
            f.writestr(f"__MACOSX/._{p.name}", b"\x00\x05junk")
    assert load_corpus("ptb", z).train.tolist() == load_corpus("ptb", folder).train.tolist()


def test_unknown_words_map_to_unk_or_are_an_error(tmp_path):
    c = load_corpus("text", write_corpus(tmp_path / "u", train="a <unk> b\n", valid="a zebra\n"))
    assert c.valid.tolist() == [c.words.index("a"), c.words.index("<unk>"), c.words.index(EOS)]
    with pytest.raises(DataError, match="'zebra'.*never occurs"):
        load_corpus("text", write_corpus(tmp_path / "n", train="a b\n", valid="a zebra\n"))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: (d / "test.txt").unlink(), "no test.txt"),
        (lambda d: (d / "valid.txt").write_text("\n\n"), "has no words"),
    ],
)
def test_bad_folders_are_one_line(tmp_path, make, match):
    folder = write_corpus(tmp_path)
    make(folder)
    with pytest.raises(DataError, match=match) as e:
        load_corpus("text", folder)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        load_corpus("text", tmp_path / "missing")


def test_batchify_makes_contiguous_streams_and_targets_are_the_next_tokens():
    data = batchify(torch.arange(11), 2)  # 11 tokens, 2 streams: 0..4 and 5..9, the last token cut
    assert data.tolist() == [[0, 5], [1, 6], [2, 7], [3, 8], [4, 9]]
    (x, y), (x2, y2) = list(windows(data, 3))
    assert x.tolist() == [[0, 5], [1, 6], [2, 7]] and y.tolist() == [1, 6, 2, 7, 3, 8]
    assert x2.tolist() == [[3, 8]] and y2.tolist() == [4, 9]
    with pytest.raises(DataError, match="too few"):
        batchify(torch.arange(5), 4)


def test_stream_carries_the_state_and_wraps_to_a_zero_state():
    torch.manual_seed(0)
    s = TextStream(batchify(torch.arange(40), 2), bptt=4)
    b = s.next()
    assert b.hidden is None and b.x.shape[1] == 2
    assert b.y.view(-1, 2).tolist() == (b.x + 1).tolist()
    b.carry(torch.ones(2, 3, requires_grad=True))
    b2 = s.next()
    assert torch.equal(b2.hidden, torch.ones(2, 3)) and not b2.hidden.requires_grad
    assert b2.x[0].tolist() == (b.x[-1] + 1).tolist()  # the next window continues the stream
    for _ in range(20):
        b = s.next()
    assert s.pos <= s.data.shape[0] - 1


# -- the cell and the rule ----------------------------------------------------------------------
def test_derived_cell_matches_a_hand_computation():
    g = RNNGenotype("darts-rnn", [("tanh", 0), ("relu", 1)], [1, 2])
    torch.manual_seed(0)
    cell = DerivedCell(g, hidden=3, dropouth=0.0, dropoutx=0.0).eval()
    x, h = torch.randn(1, 2, 3), torch.randn(2, 3)
    out = cell(x, h)

    c0, h0 = torch.cat([x[0], h], -1).mm(cell.w0).chunk(2, -1)
    s0 = h + torch.sigmoid(c0) * (torch.tanh(h0) - h)
    c1, h1 = s0.mm(cell.ws[0]).chunk(2, -1)
    s1 = s0 + torch.sigmoid(c1) * (torch.tanh(h1) - s0)
    c2, h2 = s1.mm(cell.ws[1]).chunk(2, -1)
    s2 = s1 + torch.sigmoid(c2) * (torch.relu(h2) - s1)
    assert out.shape == (1, 2, 3)
    torch.testing.assert_close(out[0], (s1 + s2) / 2)


def test_language_model_shapes_and_tying():
    g = RNNGenotype("darts-rnn", [("tanh", 0), ("sigmoid", 1)], [1, 2])
    net = LanguageModel(
        DerivedCell(g, 6, 0.2, 0.2),
        vocab=11,
        hidden=6,
        dropouts=dict.fromkeys(("dropout", "dropouti", "dropoute"), 0.1),
        tar=1e-3,
    )
    logits, hidden, penalty = net(torch.randint(0, 11, (5, 4)))
    assert logits.shape == (20, 11) and hidden.shape == (4, 6) and float(penalty.detach()) > 0
    assert net.decoder.weight is net.encoder.weight


def test_rule_keeps_one_edge_per_node_and_its_best_non_none_op():
    space = get_space("darts-rnn", 3)  # edges: node 0 <- s0; node 1 <- s0, s1; node 2 <- s0, s1, s2
    w = torch.zeros(6, 5)
    w[0] = torch.tensor([0.9, 0.0, 0.05, 0.05, 0.0])  # none is largest: the best other op is relu (first max)
    w[1, 4], w[2, 1] = 0.3, 0.4  # node 1: s1 via tanh beats s0 via identity
    w[5, 3], w[3, 0] = 0.2, 0.99  # node 2: s2 via sigmoid (a `none` never counts)
    g = space.derive({"recurrent": w})
    assert g.recurrent == [("relu", 0), ("tanh", 1), ("sigmoid", 2)] and g.concat == [1, 2, 3]
    mask = space.projection("recurrent", w)
    assert mask.sum() == 3 and space.from_masks({"recurrent": mask}).recurrent == g.recurrent


def test_genotype_json_round_trip_and_bad_files(tmp_path):
    DARTS_V2.save(tmp_path / "g.json")
    assert load_architecture(tmp_path / "g.json") == DARTS_V2
    bad = DARTS_V2.to_dict()
    bad["recurrent"][2] = ["conv", 1]
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(GenotypeError, match="op 'conv'"):
        load_architecture(tmp_path / "b.json")
    bad["recurrent"][2] = ["relu", 7]
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(GenotypeError, match="earlier state"):
        load_architecture(tmp_path / "b.json")


def test_darts_v2_at_850_has_the_reference_parameter_count():
    cfg = resolve("darts", overrides={"space": "darts-rnn", "dataset": "ptb"})
    net = get_space("darts-rnn").build_network(DARTS_V2, cfg, 10000, 10000)
    # tied embedding 10000 x 850, decoder bias, W0 1700 x 1700, eight 850 x 1700: the paper's "23M"
    assert sum(p.numel() for p in net.parameters()) == 10000 * 850 + 10000 + 1700 * 1700 + 8 * 850 * 1700


def test_asgd_switch_rule():
    assert not asgd_due([5, 4, 3, 2, 1, 0.5], 5)  # still improving
    assert not asgd_due([5, 4, 3, 2, 1], 5)  # not more than nonmono evaluations yet
    assert asgd_due([5, 4, 3, 2, 1, 5.5], 5)  # worse than the best before the last five
    assert not asgd_due([5, 4, 3, 2, 1, 4.5], 5)  # better than min([5]) = 5


# -- runs -----------------------------------------------------------------------------------------
def _tiny(tmp_path, **extra):
    corpus = str(toy_corpus(tmp_path / "corpus", lines=120))
    return dict(preset="tiny", progress=False, space="darts-rnn", dataset="text", subset=None, data_dir=corpus, **extra)


@pytest.mark.parametrize(
    "method", ["darts", "darts2", "darts-prime", "nasp", "darts-cd", "max-alpha", "rarts", "milenas", "rsws"]
)
def test_every_method_searches_a_cell(tmp_path, method):
    r = api.search(out=tmp_path / "s", method=method, **_tiny(tmp_path))
    assert r.metric == "ppl" and 1 < r.val_score < 100  # finite: one tiny epoch at lr 20 need not learn yet
    assert len(r.genotype.recurrent) == 3
    assert load_architecture(tmp_path / "s") == r.genotype


def test_random_cells_are_seeded_and_follow_the_rule(tmp_path):
    space = get_space("darts-rnn")
    a, b = (space.random_architecture(random.Random(7)) for _ in range(2))
    assert a == b and a != space.random_architecture(random.Random(8))
    assert all(op != "none" and 0 <= j <= node for node, (op, j) in enumerate(a.recurrent))
    assert space.from_masks(space.to_masks(a)) == a
    r = api.search(out=tmp_path / "r", method="random", seed=3, **_tiny(tmp_path))
    assert r.genotype == type(space)(nodes=3).random_architecture(random.Random(3))  # the tiny preset's 3 nodes


def test_method_defaults_for_this_space():
    cfg = resolve("darts-prime", overrides={"space": "darts-rnn", "dataset": "ptb"})
    assert cfg.reg.proximity == 1.0 and cfg.search.w_lr == 20.0 and cfg.search.grad_clip == 0.25
    assert resolve("darts2", overrides={"space": "darts-rnn", "dataset": "ptb"}).darts2.clip_virtual
    assert resolve("darts-cd", overrides={"space": "darts-rnn", "dataset": "ptb"}).search.a_lr == 3e-3


@pytest.mark.parametrize("method", ["pc-darts", "idarts"])
def test_partial_channel_methods_refuse(method):
    with pytest.raises(ConfigError, match="partial-channels"):
        resolve(method, overrides={"space": "darts-rnn", "dataset": "ptb"})


def test_retraining_learns_and_resumes_exactly(tmp_path):
    kw = _tiny(tmp_path, genotype=DARTS_V2)
    whole = api.train(out=tmp_path / "a", train={"epochs": 3}, **kw)
    api.train(out=tmp_path / "b", train={"epochs": 2}, **kw)
    resumed = api.train(resume=tmp_path / "b", train={"epochs": 3}, progress=False)
    assert resumed.scores == whole.scores
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
    assert whole.scores["test_ppl"] < 13  # well below a uniform guess over 14 words


@pytest.mark.skipif(not PTB_ZIP.is_file(), reason="needs ../shared/data/ptb.zip")
def test_ptb_zip():
    c = load_corpus("ptb", PTB_ZIP)
    assert (len(c.train), len(c.valid), len(c.test), c.vocab_size) == (929589, 73760, 82430, 10000)


# -- cost -----------------------------------------------------------------------------------------


def test_the_task_bench_window_has_the_next_tokens_as_targets():
    from diffnas.spaces.tasks import LANGUAGE_MODEL

    cfg = resolve("darts", overrides={"space": "darts-rnn", "dataset": "ptb", "search": {"bptt": 6}})
    g = torch.Generator().manual_seed(0)
    train = LANGUAGE_MODEL.random_batch(cfg, 4, 50, g, "cpu", train=True, image_size=16, in_channels=3)
    val = LANGUAGE_MODEL.random_batch(cfg, 4, 50, g, "cpu", train=False)
    assert train.x.shape == (6, 4) and train.y.shape == (24,) and train.hidden is None
    assert torch.equal(train.y.view(6, 4)[:-1], train.x[1:]) and int(train.x.max()) < 50
    assert train.regularize and not val.regularize and not torch.equal(train.x, val.x)


def test_bench_times_methods_and_the_derived_network_on_text_windows(tmp_path):
    from diffnas.cli import main

    out = tmp_path / "bench.json"
    tiny = ["--channels", "8", "--batch-size", "4", "--classes", "40", "--set", "search.nodes=3"]
    tiny += ["--set", "search.bptt=5", "--steps", "1", "--warmup", "1", "--saved-steps", "1"]
    assert main(["bench", "--space", "darts-rnn", "--methods", "darts,derived", *tiny, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert not report["skipped"]
    darts, derived = report["results"]["darts"], report["results"]["derived"]
    for r in (darts, derived):
        assert r["space"] == "darts-rnn" and r["input_shape"] == [5, 4] and r["num_classes"] == 40
        assert r["weight_s"] > 0 and r["saved_mb"] > 0
    assert darts["arch_s"] > 0 and derived["arch_s"] == 0 and derived["time_vs_darts"] > 0
    # the supernet: embedding 40 x 8 (tied decoder, its bias 40), s0's 16 x 16, one 8 x 16 matrix per node
    assert round(darts["params_m"] * 1e6) == 40 * 8 + 40 + 16 * 16 + 3 * 8 * 16
    # the derived cell also has one matrix per node; the one-edge-per-node rule makes it cheaper to run
    assert round(derived["params_m"] * 1e6) == round(darts["params_m"] * 1e6)
    assert derived["saved_mb"] < darts["saved_mb"]


def test_darts_cd_steps_past_its_warm_up_on_this_space():
    from diffnas.bench import measure

    sets = {"search": {"nodes": 3, "bptt": 5}, "darts-cd": {"train_shared": False}}
    r = measure("darts-cd", "darts-rnn", channels=8, batch_size=4, num_classes=40, steps=1, warmup=1, sets=sets)
    assert r["epoch"] > 0 and r["phases"]["arch"]["steps"] == 1 and r["phases"]["weight"]["saved_mb"] > 0
