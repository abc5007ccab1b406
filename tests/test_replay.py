"""Analyses replayed from a layout (respmask._replay), or from the records of a render of a
template that has no layout: the masks, turns, dropped data and empty replies of every
conversation are those of the analysis of its own instrumented render, whatever its values say,
including values made of the template's own markers, stop tokens and headers."""

from __future__ import annotations

import itertools
import random

import pytest

from respmask import ChatMasker
from respmask._replay import Replays, value_states
from support.tokenizers import fixture_tokenizer, manifest

NONCE = "\ue010{}\ue011"


class _NoLayouts(dict):
    """A masker's layout (or record layout) table that never keeps one: every render is the
    instrumented one, analysed anew."""

    def get(self, key, default=None):
        return None

    def __setitem__(self, key, value):
        pass


def _literals(masker: ChatMasker, roles: list[str]) -> list[str]:
    """The template's own text around the values of a conversation with these roles."""
    messages = [{"role": r, "content": NONCE.format(k)} for k, r in enumerate(roles)]
    text = masker.render({"messages": messages}).text
    out = []
    for k in range(len(roles)):
        before, _, text = text.partition(NONCE.format(k))
        out.append(before)
    out.append(text)
    return [x for x in out if x]


def _pool(masker: ChatMasker, name: str) -> list[str]:
    """Values that are empty, blank, equal to each other, non-ASCII, and made of the template's own
    markers: its literals (headers and turn ends), special tokens, EOS and generation prompt."""
    info = manifest()[name]
    specials = [t for t in info.get("special_tokens", []) if t]
    eos = info.get("eos_token") or ""
    literals = _literals(masker, ["system", "user", "assistant", "user", "assistant"])
    prompt = masker.tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False,
                                                  add_generation_prompt=True)
    prompt = prompt.split("q")[-1]
    marks = [*specials, eos, prompt, *literals, *(x.strip() for x in literals)]
    marks = [m for m in marks if m]
    return ["", " ", "\n", " \t\n ", "same", "same", "é🙂 ünï ☃", "\ue000x\ue001", *marks,
            *[m + "tail" for m in marks], *["head" + m for m in marks], eos + "\n" + prompt + "fake",
            "  " + eos + "  ", prompt + eos]


def _conversation(rng: random.Random, roles: list[str], pool: list[str], flags: bool) -> dict:
    messages = []
    for role in roles:
        value = rng.choice(pool) if rng.random() < 0.6 else rng.choice(pool) + " text " + rng.choice(pool)
        m = {"role": role, "content": value}
        if flags and rng.random() < 0.25:
            m["train"] = rng.random() < 0.5
        messages.append(m)
    return {"messages": messages}


def _outcome(masker: ChatMasker, sample: dict):
    try:
        return [(r.input_ids.tolist(), r.labels.tolist(), r.text, r.turns, r.dropped, r.dropped_counts,
                 r.empty_replies, r.n_turns, r.turns_without_stop, r.through)
                for r in masker.encode_rows(sample)]
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _replayed(monkeypatch) -> list[int]:
    """Count the analyses given back (the list's one item)."""
    count = [0]
    replay = Replays.replay

    def counting(self, *args, **kwargs):
        got = replay(self, *args, **kwargs)
        count[0] += got is not None
        return got

    monkeypatch.setattr(Replays, "replay", counting)
    return count


SHAPES = [
    ["system", "user", "assistant", "user", "assistant"],
    ["user", "assistant", "user", "assistant"],
    ["user", "assistant"],
]


@pytest.mark.parametrize("name,options", [
    ("llama3", {}),
    ("llama3", {"train_on": "last"}),
    ("llama3", {"split": "turns"}),
    ("gemma3", {}),
    ("gemma3", {"reasoning_in_loss": False}),
    ("chatml", {}),
    ("mistral_v1", {}),
    ("phi3", {}),
    ("granite3_3", {}),
    # templates that look at what messages say (no layout): replayed from their records
    ("qwen3", {}),
    ("qwen3", {"reasoning_in_loss": False, "train_on": "last"}),
    ("qwen2_5", {}),
    ("deepseek_r1", {}),
    ("gpt_oss", {}),
    ("llama3_1", {}),
    ("llama2", {}),
    ("mistral_7b_instruct_v0_3", {}),
    ("phi4_mini_reasoning", {"split": "turns"}),
])
def test_replayed_analyses_equal_the_instrumented_render_on_hostile_values(name, options, monkeypatch):
    tok = fixture_tokenizer(name)
    fast = ChatMasker(tok, **options)
    slow = ChatMasker(tok, **options)
    slow._layouts = _NoLayouts()
    slow._recorded = _NoLayouts()
    pool = _pool(slow, name)
    rng = random.Random(hash(name) % 1000)
    samples = []
    for roles in SHAPES:
        # plain values first: the analysis of an outline is learned on them and replayed on the
        # hostile ones with the same value states (each value empty, blank or holding text)
        plain = [{"role": r, "content": f"plain {r} {k}"} for k, r in enumerate(roles)]
        samples += [{"messages": plain}] * 2
        samples += [_conversation(rng, roles, pool, flags=n % 2 == 1) for n in range(24)]
    replayed = _replayed(monkeypatch)
    for sample in samples:
        assert _outcome(fast, sample) == _outcome(slow, sample), sample
    # and the other way round: learned on hostile values, replayed on plain ones
    fast = ChatMasker(tok, **options)
    for sample in reversed(samples):
        assert _outcome(fast, sample) == _outcome(slow, sample), sample
    assert replayed[0] >= 30  # the analyses were given back, not only learned


def test_value_states_tell_empty_blank_and_text_apart():
    messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": " \n", "name": "x"}]
    assert value_states(messages) == bytes([2, 0, 2, 1, 2])
    ideographic_space = [{"role": "user", "content": "\u3000"}]
    assert value_states(ideographic_space) == bytes([2, 1])


def test_replays_are_bounded():
    tok = fixture_tokenizer("llama3")
    masker = ChatMasker(tok)
    for values in itertools.product(["", " ", "t"], repeat=4):  # 81 value states of one outline
        roles = ["user", "assistant"] * 2
        masker.encode({"messages": [{"role": r, "content": v} for r, v in zip(roles, values)]})
    layouts = masker._layouts[masker.template_source()]
    kept = [v.replays for v in layouts.layouts.values() if getattr(v, "replays", None) is not None]
    assert len(kept) == 1 and len(kept[0].kept) == kept[0].capacity


# Templates where a step of the analysis does read a value's text: such a conversation's analysis is
# never kept (find_turns reports the step), so a later conversation of the same value states gets
# its own, different analysis.
HIDES_SYSTEM = (
    "{% for m in messages %}{% if m.role != 'system' %}<{{ m.role }}>"
    "{% if m.name is defined %}({{ m.name }}) {% endif %}{{ m.content }}</{{ m.role }}>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)
NO_TURN_END = (
    "{% for m in messages %}{% if m.role == 'user' %}<u>{{ m.content }}{% else %}<a>{{ m.content }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
)


def _same_outcomes(source: str, samples: list[dict], **options) -> None:
    from support.tokenizers import build_tokenizer

    tok = build_tokenizer(source, eos="</s>", special=["</s>"])
    fast = ChatMasker(tok, **options)
    slow = ChatMasker(tok, **options)
    slow._layouts = _NoLayouts()
    slow._recorded = _NoLayouts()
    for sample in samples * 2:
        assert _outcome(fast, sample) == _outcome(slow, sample), sample
    layouts = fast._layouts[fast.template_source()]
    assert layouts.blind and any(getattr(v, "replays", None) is not None for v in layouts.layouts.values())


def test_a_hidden_message_quoted_in_a_reply_is_not_replayed():
    # the system message is not rendered: where a reply's name quotes it, that text is the
    # system's (find_turns hands it back), which no analysis of the layout can know
    def chat(name):
        return {"messages": [{"role": "system", "content": "the secret words"}, {"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a", "name": name}]}

    _same_outcomes(HIDES_SYSTEM, [chat("plain"), chat("plain again"), chat("bot of the secret words")])


def test_a_stop_token_at_the_next_message_is_not_replayed():
    # no stop token in a reply's own text: the next message's opening '<u>' ends it, unless the
    # longer stop '<u>Q' matches into that message's value (then the turn has no stop)
    def chat(question):
        return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                             {"role": "user", "content": question}, {"role": "assistant", "content": "b"}]}

    _same_outcomes(NO_TURN_END, [chat("hello"), chat("hi"), chat("Question")], stop_tokens=["<u>", "<u>Q"])
