"""Real-world prompts (A1111, Civitai, NovelAI) through the whole parse of specs §4.1.

Each expectation was derived by hand from the spec: network tags stripped, AND split with
weights, each part scheduled over 20 steps, each scheduled text parsed for emphasis.
"""

from __future__ import annotations

import pytest

from emaki.prompts import extract_networks, parse_and, parse_attention, prompt_schedules, to_a1111

R, S = 1.1, 1 / 1.1
Runs = list[tuple[str, float]]
Schedule = list[tuple[int, Runs]]


def structure(
    prompt: str, *, steps: int = 20, dialect: str = "a1111"
) -> list[tuple[float, Schedule]]:
    text, _ = extract_networks(prompt)
    return [
        (weight, [(end, parse_attention(t)) for end, t in prompt_schedules(part, steps)])
        for part, weight in parse_and(to_a1111(text, dialect))
    ]


def one(runs: Runs, weight: float = 1.0) -> list[tuple[float, Schedule]]:
    """A prompt with no AND and no editing."""
    return [(weight, [(20, runs)])]


def edit(first: Runs, at: int, then: Runs) -> list[tuple[float, Schedule]]:
    return [(1.0, [(at, first), (20, then)])]


def alternate(*options: Runs) -> list[tuple[float, Schedule]]:
    return [(1.0, [(step, options[(step - 1) % len(options)]) for step in range(1, 21)])]


NEGATIVE_BASE = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
    "username, blurry"
)

CASES: list[tuple[str, list[tuple[float, Schedule]]]] = [
    (
        "masterpiece, best quality, 1girl, solo, long hair, blue eyes, smile",
        one([("masterpiece, best quality, 1girl, solo, long hair, blue eyes, smile", 1.0)]),
    ),
    (NEGATIVE_BASE, one([(NEGATIVE_BASE, 1.0)])),
    (
        "(masterpiece:1.2), (best quality:1.2), 1girl, silver hair, (red eyes:1.1)",
        one(
            [
                ("masterpiece", 1.2),
                (", ", 1.0),
                ("best quality", 1.2),
                (", 1girl, silver hair, ", 1.0),
                ("red eyes", 1.1),
            ]
        ),
    ),
    (
        "((masterpiece)), ((best quality)), (ultra-detailed), 1girl",
        one(
            [
                ("masterpiece", R * R),
                (", ", 1.0),
                ("best quality", R * R),
                (", ", 1.0),
                ("ultra-detailed", R),
                (", 1girl", 1.0),
            ]
        ),
    ),
    (
        "(worst quality, low quality:1.4), (monochrome), easynegative",
        one(
            [
                ("worst quality, low quality", 1.4),
                (", ", 1.0),
                ("monochrome", R),
                (", easynegative", 1.0),
            ]
        ),
    ),
    (
        "(masterpiece, best quality:1.2), 1girl, [[[[[[[bad]]]]]]]",
        one([("masterpiece, best quality", 1.2), (", 1girl, ", 1.0), ("bad", S**7)]),
    ),
    (
        "1girl, (smile:0.8), [frown], (((blush)))",
        one(
            [
                ("1girl, ", 1.0),
                ("smile", 0.8),
                (", ", 1.0),
                ("frown", S),
                (", ", 1.0),
                ("blush", 1.3310000000000004),
            ]
        ),
    ),
    (
        "landscape, mountains, (sunset:1.3), [[clouds]], lake reflection, 8k",
        one(
            [
                ("landscape, mountains, ", 1.0),
                ("sunset", 1.3),
                (", ", 1.0),
                ("clouds", S * S),
                (", lake reflection, 8k", 1.0),
            ]
        ),
    ),
    (
        "(a girl with (long hair:1.2) and (blue eyes:1.1):1.1)",
        one(
            [
                ("a girl with ", 1.1),
                ("long hair", 1.2 * 1.1),
                (" and ", 1.1),
                ("blue eyes", 1.1 * 1.1),
            ]
        ),
    ),
    (
        "1girl, solo, upper body, looking at viewer, (holding sword:1.1), armor, [[[blood]]]",
        one(
            [
                ("1girl, solo, upper body, looking at viewer, ", 1.0),
                ("holding sword", 1.1),
                (", armor, ", 1.0),
                ("blood", S * S * S),
            ]
        ),
    ),
    (
        "初音ミク, (ツインテール:1.2), 笑顔",
        one([("初音ミク, ", 1.0), ("ツインテール", 1.2), (", 笑顔", 1.0)]),
    ),
    (
        "1girl, gawr gura \\(hololive\\), shark tail",
        one([("1girl, gawr gura (hololive), shark tail", 1.0)]),
    ),
    (
        "1girl, gawr gura (hololive), shark tail",  # unescaped: emphasis, a common mistake
        one([("1girl, gawr gura ", 1.0), ("hololive", R), (", shark tail", 1.0)]),
    ),
    ("artist:wlop, 1girl", one([("artist:wlop, 1girl", 1.0)])),
    ("1girl, smile, :d", one([("1girl, smile, :d", 1.0)])),
    ("1girl, ;) wink", one([("1girl, ;) wink", 1.0)])),
    ("1girl, :) smile", one([("1girl, :) smile", 1.0)])),
    (
        # the emoticon at the end is read as an AND weight
        "score_9, 1girl, cat ears, :3",
        one([("score_9, 1girl, cat ears,", 1.0)], weight=3.0),
    ),
    ("{masterpiece}, {{wolf ears}}", one([("{masterpiece}, {{wolf ears}}", 1.0)])),
    ("1girl\nsolo\nsmile", one([("1girl\nsolo\nsmile", 1.0)])),
    (
        "(masterpiece:1.2) best quality ANDROID 18",
        one([("masterpiece", 1.2), (" best quality ANDROID 18", 1.0)]),
    ),
    # prompt editing
    (
        "1girl, [smile:crying:0.5], school uniform",
        edit([("1girl, smile, school uniform", 1.0)], 10, [("1girl, crying, school uniform", 1.0)]),
    ),
    (
        "a [dog:cat:10] sitting on a bench",
        edit([("a dog sitting on a bench", 1.0)], 10, [("a cat sitting on a bench", 1.0)]),
    ),
    (
        "[(white background:1.5)::5], 1girl",
        edit([("white background", 1.5), (", 1girl", 1.0)], 5, [(", 1girl", 1.0)]),
    ),
    (
        "[:(detailed background:1.2):0.3], 1girl",
        edit([(", 1girl", 1.0)], 6, [("detailed background", 1.2), (", 1girl", 1.0)]),
    ),
    (
        "1girl, [kneeling::15], standing",
        edit([("1girl, kneeling, standing", 1.0)], 15, [("1girl, , standing", 1.0)]),
    ),
    (
        "masterpiece, 1girl, solo, [black hair:white hair:0.3], (wedding dress:1.2), church",
        edit(
            [
                ("masterpiece, 1girl, solo, black hair, ", 1.0),
                ("wedding dress", 1.2),
                (", church", 1.0),
            ],
            6,
            [
                ("masterpiece, 1girl, solo, white hair, ", 1.0),
                ("wedding dress", 1.2),
                (", church", 1.0),
            ],
        ),
    ),
    (
        "[[1girl:1boy:5]:cat:15]",
        [(1.0, [(5, [("1girl", 1.0)]), (15, [("1boy", 1.0)]), (20, [("cat", 1.0)])])],
    ),
    (
        "(masterpiece:1.2), [red:blue:0.5] hair, [(smile:1.3)|frown]",
        [
            (
                1.0,
                [
                    (
                        step,
                        [
                            ("masterpiece", 1.2),
                            (f", {'red' if step <= 10 else 'blue'} hair, ", 1.0),
                            ("smile", 1.3),
                        ]
                        if step % 2
                        else [
                            ("masterpiece", 1.2),
                            (f", {'red' if step <= 10 else 'blue'} hair, frown", 1.0),
                        ],
                    )
                    for step in range(1, 21)
                ],
            )
        ],
    ),
    # alternation
    (
        "[cat|dog] girl, animal ears",
        alternate([("cat girl, animal ears", 1.0)], [("dog girl, animal ears", 1.0)]),
    ),
    (
        "portrait of a girl, [blonde|black|red] hair",
        alternate(
            [("portrait of a girl, blonde hair", 1.0)],
            [("portrait of a girl, black hair", 1.0)],
            [("portrait of a girl, red hair", 1.0)],
        ),
    ),
    ("[fe|]male knight", alternate([("female knight", 1.0)], [("male knight", 1.0)])),
    # AND
    (
        "1girl, (red hair:1.3) AND 1girl, (blue hair:1.3)",
        [
            (1.0, [(20, [("1girl, ", 1.0), ("red hair", 1.3)])]),
            (1.0, [(20, [(" 1girl, ", 1.0), ("blue hair", 1.3)])]),
        ],
    ),
    (
        "a castle on a hill AND sunset sky:0.6",
        [(1.0, [(20, [("a castle on a hill", 1.0)])]), (0.6, [(20, [(" sunset sky", 1.0)])])],
    ),
    (
        "a photo of [a cat:a dog:0.5] AND forest background:0.8",
        [
            (1.0, [(10, [("a photo of a cat", 1.0)]), (20, [("a photo of a dog", 1.0)])]),
            (0.8, [(20, [(" forest background", 1.0)])]),
        ],
    ),
    (
        "a (b:1.2) AND c:0.5 AND d",
        [
            (1.0, [(20, [("a ", 1.0), ("b", 1.2)])]),
            (0.5, [(20, [(" c", 1.0)])]),
            (1.0, [(20, [(" d", 1.0)])]),
        ],
    ),
    ("white hair AND", [(1.0, [(20, [("white hair", 1.0)])]), (1.0, [(20, [("", 1.0)])])]),
    (
        "city at night AND neon lights:-0.5",
        [(1.0, [(20, [("city at night", 1.0)])]), (-0.5, [(20, [(" neon lights", 1.0)])])],
    ),
    # extra networks and BREAK
    (
        "masterpiece, 1girl, <hypernet:anime_3:0.6>, outdoors",
        one([("masterpiece, 1girl, , outdoors", 1.0)]),
    ),
    (
        "1girl, hatsune miku, (aqua hair:1.1), twintails, <hypernet:miku:1>, BREAK, stage, concert",
        one(
            [
                ("1girl, hatsune miku, ", 1.0),
                ("aqua hair", 1.1),
                (", twintails, ,", 1.0),
                ("BREAK", -1.0),
                (", stage, concert", 1.0),
            ]
        ),
    ),
    (
        "1girl, solo BREAK red dress, city street",
        one([("1girl, solo", 1.0), ("BREAK", -1.0), ("red dress, city street", 1.0)]),
    ),
    (
        "(1girl BREAK cat:1.2)",
        one([("1girl", 1.2), ("BREAK", -1.2), ("cat", 1.2)]),
    ),
    # unparsable editing: the text is kept and its brackets become emphasis
    (
        "[cat|dog:5] girl",
        one([("cat|dog:5", S), (" girl", 1.0)]),
    ),
    (
        "a [b:c] d",
        one([("a ", 1.0), ("b:c", S), (" d", 1.0)]),
    ),
]

NOVELAI_CASES: list[tuple[str, list[tuple[float, Schedule]]]] = [
    (
        "{masterpiece}, {{best quality}}, 1girl",
        one([("masterpiece", 1.05), (", ", 1.0), ("best quality", 1.1025), (", 1girl", 1.0)]),
    ),
    (
        "{{{masterpiece}}}, {best quality}, [[ugly]], 1girl, {{cat ears}}",
        one(
            [
                ("masterpiece", 1.1576),
                (", ", 1.0),
                ("best quality", 1.05),
                (", ", 1.0),
                ("ugly", 0.907),
                (", 1girl, ", 1.0),
                ("cat ears", 1.1025),
            ]
        ),
    ),
    (
        "1girl, solo, {smile}, (hololive)",
        one([("1girl, solo, ", 1.0), ("smile", 1.05), (", (hololive)", 1.0)]),
    ),
]


@pytest.mark.parametrize(("prompt", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_real_world_prompt(prompt: str, expected: list[tuple[float, Schedule]]) -> None:
    assert structure(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"), NOVELAI_CASES, ids=[c[0][:40] for c in NOVELAI_CASES]
)
def test_real_world_novelai_prompt(prompt: str, expected: list[tuple[float, Schedule]]) -> None:
    assert structure(prompt, dialect="novelai") == expected
