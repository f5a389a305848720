"""Tiny GLUE folders in the exact formats of ``download_glue_data.py`` (rows taken from GLUE).

``EXPECTED[task][split]`` lists ``(text_a, text_b, label)`` per example, with labels as our ids
(or floats for STS-B), so a test can compare a loader's output with what was written.
Quote characters inside the text are deliberate: GLUE's TSVs are not quoted CSV.
"""

from __future__ import annotations

from pathlib import Path

TAB = "\t"


def _write(path: Path, lines: list[list[str]], bom: bool = False, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    eol = "\r\n" if crlf else "\n"
    text = eol.join(TAB.join(fields) for fields in lines) + eol
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))


# --- CoLA: no header; source, label, original mark, sentence -----------------------------
COLA_TRAIN = [
    ["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
    ["gj04", "0", "*", "They drank the pub."],
    ["cj99", "1", "", 'He said "stop and left.'],
]
COLA_DEV = [
    ["gj04", "1", "", "The sailors rode the breeze clear of the rocks."],
    ["gj04", "0", "*", 'The more we study verbs, the crazier they get "really".'],
]

# --- SST-2 ------------------------------------------------------------------------------
SST2_HEADER = ["sentence", "label"]
SST2_TRAIN = [
    ["hide new secretions from the parental units ", "0"],
    ["that loves its characters and communicates something rather beautiful about human nature ", "1"],
    ['the film \'s " unsettling " mood ', "1"],
]
SST2_DEV = [
    ["it 's a charming and often affecting journey . ", "1"],
    ["unflinchingly bleak and desperate ", "0"],
]

# --- MRPC -------------------------------------------------------------------------------
MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
MRPC_ROWS = [
    ["1", "702876", "702977",
     'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
     'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .'],
    ["0", "2108705", "2108831",
     "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
     "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 ."],
    ["1", "1330381", "1330521",
     "They had published an advertisement on the Internet on June 10 , offering the cargo for sale , he added .",
     "On June 10 , the ship 's owners had published an advertisement on the Internet , offering the explosives for sale ."],
]
MRPC_TEST = [
    ["1", "1089874", "1089925",
     "PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief financial officer , will report directly to Mr So .",
     "Current Chief Operating Officer Mike Butcher and Group Chief Financial Officer Alex Arena will report to So ."],
]
MRPC_DEV_IDS = [["1330381", "1330521"]]

# --- QQP --------------------------------------------------------------------------------
QQP_HEADER = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
QQP_TRAIN = [
    ["133273", "213221", "213222", "How is the life of a math student? Could you describe your own experiences?",
     "Which level of prepration is enough for the exam jlpt5?", "0"],
    ["402555", "536040", "536041", "How do I control my horny emotions?", "How do you control your horniness?", "1"],
]
QQP_DEV = [
    ["1", "3", "4", 'What does "koan" mean?', 'What is the meaning of "koan"?', "1"],
    ["2", "5", "6", "Why do rockets look white?", "Why are rockets and boosters painted white?", "0"],
]

# --- STS-B: 10 columns, score last ------------------------------------------------------
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
STSB_TRAIN = [
    ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
     "An air plane is taking off.", "5.000"],
    ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.",
     "A man is playing a flute.", "3.800"],
]
STSB_DEV = [
    ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none", "A man with a hard hat is dancing.",
     "A man wearing a hard hat is dancing.", "5.000"],
    ["1", "main-forums", "answers-forums", "2015", "0002", "none", "none", '"A woman is dancing.',
     "A man is talking.", "0.250"],
]

# --- MNLI: 12 columns in train, 16 in the dev files, gold_label last --------------------
_PARSES = ["( ( A b ) c )", "( d e )", "(ROOT (S (NP A) (VP b)))", "(ROOT (S (NP d) (VP e)))"]
MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:10] + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
MNLI_TRAIN = [
    ["0", "31193", "31193n", "government", *_PARSES,
     "Conceptually cream skimming has two basic dimensions - product and geography.",
     "Product and geography are what make cream skimming work. ", "neutral", "neutral"],
    ["1", "101457", "101457e", "telephone", *_PARSES, 'you know during the season and i guess at at your level uh you lose them "to the next level',
     "You lose the things to the following level if the people recall.", "entailment", "entailment"],
    ["2", "134793", "134793c", "fiction", *_PARSES, "One of our number will carry out your instructions minutely.",
     "A member of my team will execute your orders with immense precision.", "contradiction", "contradiction"],
]
MNLI_MATCHED = [
    ["0", "63735", "63735n", "slate", *_PARSES, "The new rights are nice enough",
     "Everyone really likes the newest benefits ", "neutral", "entailment", "neutral", "neutral", "neutral", "neutral"],
]
MNLI_MISMATCHED = [
    ["0", "75290", "75290c", "letters", *_PARSES,
     "Your contribution helped make it possible for us to provide our students with a quality education.",
     "Your contributions were of no help with our students' education.",
     "contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"],
    ["1", "133794", "133794c", "verbatim", *_PARSES, 'The "Jersey" answer is no.', "The answer is yes.",
     "contradiction", "contradiction", "neutral", "contradiction", "contradiction", "contradiction"],
]

# --- QNLI, RTE, WNLI --------------------------------------------------------------------
QNLI_HEADER = ["index", "question", "sentence", "label"]
QNLI_TRAIN = [
    ["0", "When did the third Digimon series begin?",
     "Unlike the two seasons before it, Digimon Tamers takes a darker approach.", "not_entailment"],
    ["1", "Which missile batteries often have individual launchers several kilometres from one another?",
     'When MANPADS is operated by specialists, batteries may have several dozen teams deploying "separately".',
     "entailment"],
]
QNLI_DEV = [
    ["0", "What came into force after the new constitution was herald?",
     "As of that day, the new constitution heralding the Second Republic came into force.", "entailment"],
]
PAIR_HEADER = ["index", "sentence1", "sentence2", "label"]
RTE_TRAIN = [
    ["0", "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
     "not_entailment"],
    ["1", 'A place of sorrow, after Pope John Paul II died, became a place of "celebration".',
     "Pope Benedict XVI is the new leader of the Roman Catholic Church.", "entailment"],
]
RTE_DEV = [
    ["0", "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.",
     "Christopher Reeve had an accident.", "not_entailment"],
]
WNLI_TRAIN = [
    ["0", "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", "1"],
    ["1", "John couldn't see the stage with Billy in front of him because he is so short.",
     "John is so short.", "1"],
    ["2", 'The "police" arrested all of the gang members. They were trying to stop the drug trade.',
     "The police were trying to stop the drug trade in the neighborhood.", "0"],
]
WNLI_DEV = [
    ["0", "The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", "0"],
]


def write_glue(root: Path, mrpc: str = "tsv") -> Path:
    """Write all nine tasks under ``root`` (GLUE root layout); MRPC as ``tsv``, ``msr`` or ``msr-no-ids``."""
    _write(root / "CoLA" / "train.tsv", COLA_TRAIN)
    _write(root / "CoLA" / "dev.tsv", COLA_DEV)
    _write(root / "SST-2" / "train.tsv", [SST2_HEADER, *SST2_TRAIN])
    _write(root / "SST-2" / "dev.tsv", [SST2_HEADER, *SST2_DEV])
    if mrpc == "tsv":
        _write(root / "MRPC" / "train.tsv", [MRPC_HEADER, *MRPC_ROWS[:2]])
        _write(root / "MRPC" / "dev.tsv", [MRPC_HEADER, MRPC_ROWS[2]])
    else:  # Microsoft's files: BOM and CRLF line ends
        _write(root / "MRPC" / "msr_paraphrase_train.txt", [MRPC_HEADER, *MRPC_ROWS], bom=True, crlf=True)
        _write(root / "MRPC" / "msr_paraphrase_test.txt", [MRPC_HEADER, *MRPC_TEST], bom=True, crlf=True)
        if mrpc == "msr":
            _write(root / "MRPC" / "dev_ids.tsv", MRPC_DEV_IDS, crlf=True)
    _write(root / "QQP" / "train.tsv", [QQP_HEADER, *QQP_TRAIN])
    _write(root / "QQP" / "dev.tsv", [QQP_HEADER, *QQP_DEV])
    _write(root / "STS-B" / "train.tsv", [STSB_HEADER, *STSB_TRAIN])
    _write(root / "STS-B" / "dev.tsv", [STSB_HEADER, *STSB_DEV])
    _write(root / "MNLI" / "train.tsv", [MNLI_TRAIN_HEADER, *MNLI_TRAIN])
    _write(root / "MNLI" / "dev_matched.tsv", [MNLI_DEV_HEADER, *MNLI_MATCHED])
    _write(root / "MNLI" / "dev_mismatched.tsv", [MNLI_DEV_HEADER, *MNLI_MISMATCHED])
    _write(root / "QNLI" / "train.tsv", [QNLI_HEADER, *QNLI_TRAIN])
    _write(root / "QNLI" / "dev.tsv", [QNLI_HEADER, *QNLI_DEV])
    _write(root / "RTE" / "train.tsv", [PAIR_HEADER, *RTE_TRAIN])
    _write(root / "RTE" / "dev.tsv", [PAIR_HEADER, *RTE_DEV])
    _write(root / "WNLI" / "train.tsv", [PAIR_HEADER, *WNLI_TRAIN])
    _write(root / "WNLI" / "dev.tsv", [PAIR_HEADER, *WNLI_DEV])
    return root


def _cls(rows, a, b, label, names):
    return [(r[a].strip(), None if b is None else r[b].strip(), names.index(r[label])) for r in rows]


_NLI3 = ["entailment", "neutral", "contradiction"]
_NLI2 = ["entailment", "not_entailment"]
EXPECTED = {
    "cola": {"train": _cls(COLA_TRAIN, 3, None, 1, ["0", "1"]), "dev": _cls(COLA_DEV, 3, None, 1, ["0", "1"])},
    "sst2": {"train": _cls(SST2_TRAIN, 0, None, 1, ["0", "1"]), "dev": _cls(SST2_DEV, 0, None, 1, ["0", "1"])},
    "mrpc": {"train": _cls(MRPC_ROWS[:2], 3, 4, 0, ["0", "1"]), "dev": _cls(MRPC_ROWS[2:], 3, 4, 0, ["0", "1"])},
    "qqp": {"train": _cls(QQP_TRAIN, 3, 4, 5, ["0", "1"]), "dev": _cls(QQP_DEV, 3, 4, 5, ["0", "1"])},
    "stsb": {"train": [(r[7], r[8], float(r[9])) for r in STSB_TRAIN],
             "dev": [(r[7], r[8], float(r[9])) for r in STSB_DEV]},
    "mnli": {"train": _cls(MNLI_TRAIN, 8, 9, 11, _NLI3), "matched": _cls(MNLI_MATCHED, 8, 9, 15, _NLI3),
             "mismatched": _cls(MNLI_MISMATCHED, 8, 9, 15, _NLI3)},
    "qnli": {"train": _cls(QNLI_TRAIN, 1, 2, 3, _NLI2), "dev": _cls(QNLI_DEV, 1, 2, 3, _NLI2)},
    "rte": {"train": _cls(RTE_TRAIN, 1, 2, 3, _NLI2), "dev": _cls(RTE_DEV, 1, 2, 3, _NLI2)},
    "wnli": {"train": _cls(WNLI_TRAIN, 1, 2, 3, ["0", "1"]), "dev": _cls(WNLI_DEV, 1, 2, 3, ["0", "1"])},
}
