"""Running a merge: find and check the recipe's inputs, stream the result into a new file.

Memory stays at a few slices whatever the model size: inputs are read a slice at a time
(`sources.py`), computed in reused float32 buffers (`plan.py`) and appended to the output
(`writer.py`), which is renamed into place only when complete.

Inputs a recipe names are verified by sha256 (cached by path, size and mtime); an input that
is itself an emaki merge and whose file is gone (or changed) is recomputed from its own recipe
on the fly, so a merge of merges replays from the leaves. LoRAs baked in (`recipe.loras`) are
verified by their 12-hex `Lora hashes` hash.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from emaki.files import STALE_PARTIAL_S, remove_stale_partials
from emaki.merge.plan import SLICE_ELEMENTS, MergePlan
from emaki.merge.recipe import (
    RECIPE_METADATA_KEY,
    InputFacts,
    InputRef,
    LoraRef,
    MergeError,
    MergeRecipe,
    merge_metadata,
    recipe_from_json,
)
from emaki.merge.sources import TensorSource, open_source
from emaki.merge.writer import SafetensorsWriter, safetensors_header
from emaki.models.hashes import FileHashes, HashCache

#: `progress(done_bytes, total_bytes)`, called after every slice written.
ProgressFn = Callable[[int, int], None]
CONFIG_METADATA_KEY = "emaki_config"  # the architecture A's file carries (emaki.models.checkpoint)


@dataclass
class MergeResult:
    path: Path
    recipe: MergeRecipe  # with every input's path, sha256 and nested recipe filled in
    metadata: dict[str, str]
    seconds: float
    nbytes: int
    rebuilt: list[str] = field(default_factory=list)  # inputs recomputed from their recipes
    #: per baked LoRA (by name): its keys that name no tensor of the model (not applied)
    lora_unmatched: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Opened:
    source: TensorSource
    ref: InputRef
    name: str
    metadata: dict[str, str]
    hashes: Future[FileHashes] | FileHashes | None  # None: a recomputed merge, hashes from its ref

    def facts(self) -> InputFacts:
        if self.hashes is None:  # recomputed from its recipe: the hashes its file had
            sha = self.ref.sha256 or _stand_in_hash(self.ref)
            return InputFacts(self.name, sha, self.ref.legacy_hash or "", self.metadata)
        hashes = self.hashes.result() if isinstance(self.hashes, Future) else self.hashes
        return InputFacts(self.name, hashes.sha256, hashes.legacy, self.metadata)

    def placeholder_facts(self, index: int) -> InputFacts:
        """Facts of the same JSON length, to lay out the header before hashes are known."""
        return InputFacts(self.name, f"{index:064x}", f"{index:08x}", self.metadata)


def _stand_in_hash(ref: InputRef) -> str:
    """For a hand-written nested recipe whose output was never a file: 64 chars from its recipe."""
    text = ref.recipe.to_json() if ref.recipe is not None else ref.path
    return "recipe-" + hashlib.sha256(text.encode()).hexdigest()[:57]


class _Session:
    """Opens inputs (recursively for nested recipes) and remembers what to close."""

    def __init__(
        self,
        hashes: HashCache,
        base_dir: Path | None,
        slice_elements: int,
        stack: ExitStack,
        pool: ThreadPoolExecutor,
    ):
        self.hashes, self.base_dir, self.slice_elements = hashes, base_dir, slice_elements
        self.stack, self.pool = stack, pool
        self.rebuilt: list[str] = []
        self.input_paths: set[Path] = set()
        self.inputs: dict[int, tuple[dict[str, _Opened], _Opened | None]] = {}  # by id(plan)
        self.loras: dict[int, tuple[LoraRef, ...]] = {}  # by id(plan), hashes filled in

    def find(self, path: str) -> Path | None:
        candidates = [Path(path).expanduser()]
        if self.base_dir is not None:
            candidates += [self.base_dir / path, self.base_dir / Path(path).name]
        return next((p for p in candidates if p.is_file()), None)

    def open_input(self, ref: InputRef, role: str) -> _Opened:
        path = self.find(ref.path)
        if path is not None and ref.sha256 is None:  # a new merge: hash while merging
            source = self._open_file(path)
            nested = _embedded_recipe(source)
            future = self.pool.submit(self.hashes.get, path)
            resolved = str(path.resolve())
            opened = _Opened(
                source, InputRef(resolved, None, None, nested), path.name, source.metadata, future
            )
            return opened
        if path is not None:
            hashes = self.hashes.get(path)
            if hashes.sha256 == ref.sha256:
                source = self._open_file(path)
                return _Opened(source, ref, ref.name, source.metadata, hashes)
            if ref.recipe is None:
                raise MergeError(
                    f"{path}: sha256 {hashes.sha256[:10]} differs from the recipe's "
                    f"{(ref.sha256 or '')[:10]} (model {role.upper()}); this is not the file the "
                    "recipe was made from"
                )
        elif ref.recipe is None:
            known = f", sha256 {ref.sha256[:10]}" if ref.sha256 else ""
            raise MergeError(
                f"{ref.path}: no such file (model {role.upper()} of the recipe{known})"
            )
        assert ref.recipe is not None
        plan = self.build(ref.recipe)
        self.rebuilt.append(ref.path)
        return _Opened(plan, ref, ref.name, plan.metadata, None)

    def _open_file(self, path: Path) -> TensorSource:
        source = open_source(path)
        self.input_paths.add(path.resolve())
        self.stack.callback(source.close)
        return source

    def open_lora(self, ref: LoraRef) -> tuple[LoraRef, TensorSource]:
        """A baked LoRA's file, checked against the recipe's hash; the ref with path and hash."""
        from emaki.networks.lora import LoraLibrary

        path = self.find(ref.path)
        if path is None:
            known = f", hash {ref.hash}" if ref.hash else ""
            raise MergeError(f"{ref.path}: no such file (LoRA {ref.label!r} of the recipe{known})")
        shorthash = LoraLibrary().shorthash(path)
        if ref.hash is not None and ref.hash != shorthash:
            raise MergeError(
                f"{path}: LoRA hash {shorthash} differs from the recipe's {ref.hash} "
                f"(LoRA {ref.label!r}); this is not the file the recipe was made from"
            )
        source = self._open_file(path)
        return replace(ref, path=str(path.resolve()), hash=shorthash), source

    def build(self, recipe: MergeRecipe) -> MergePlan:
        """The plan of `recipe` over its opened inputs (nested recipes recursively)."""
        opened = {role: self.open_input(ref, role) for role, ref in recipe.inputs.items()}
        vae = self.open_input(recipe.vae, "vae") if recipe.vae is not None else None
        loras = [self.open_lora(ref) for ref in recipe.loras]
        b, c = opened.get("b"), opened.get("c")
        plan = MergePlan(
            recipe,
            opened["a"].source,
            b.source if b is not None else None,
            c.source if c is not None else None,
            vae=vae.source if vae is not None else None,
            loras=loras,
            slice_elements=self.slice_elements,
        )
        self.inputs[id(plan)] = (opened, vae)
        self.loras[id(plan)] = tuple(ref for ref, _ in loras)
        return plan


def _embedded_recipe(source: TensorSource) -> MergeRecipe | None:
    text = source.metadata.get(RECIPE_METADATA_KEY)
    if not text:
        return None
    try:
        return recipe_from_json(text, f"{source.label}:{RECIPE_METADATA_KEY}")
    except MergeError:
        return None  # an unreadable (or hostile) embedded recipe only loses the lineage record


def _completed_recipe(
    session: _Session, plan: MergePlan, *, placeholders: bool
) -> tuple[MergeRecipe, dict[str, str]]:
    """The recipe with the inputs' hashes filled in, and the output metadata it implies."""
    opened, vae = session.inputs[id(plan)]
    facts: dict[str, InputFacts] = {}
    refs: dict[str, InputRef | None] = {}
    for index, (role, item) in enumerate(
        [*opened.items(), *([("vae", vae)] if vae is not None else [])], start=1
    ):
        fact = item.placeholder_facts(index) if placeholders else item.facts()
        if role != "vae":
            facts[role] = fact
        ref = item.ref
        if item.hashes is not None and ref.sha256 is None:  # a new input: record its hashes
            ref = replace(ref, sha256=fact.sha256, legacy_hash=fact.legacy_hash)
        refs[role] = ref
    recipe = replace(plan.recipe, **refs, loras=session.loras[id(plan)])  # type: ignore[arg-type]
    architecture = facts["a"].metadata.get(CONFIG_METADATA_KEY)
    metadata = merge_metadata(
        recipe,
        facts,
        is_inpainting=plan.is_inpainting,
        is_instruct_pix2pix=plan.is_instruct_pix2pix,
        architecture=architecture,
    )
    return recipe, metadata


def merge(
    recipe: MergeRecipe,
    out: str | Path,
    *,
    hashes: HashCache | None = None,
    base_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
    slice_elements: int = SLICE_ELEMENTS,
) -> MergeResult:
    """Write the model `recipe` describes to `out` (`.safetensors`), in bounded memory.

    Inputs whose `sha256` is unset are hashed (in the background, while merging) and recorded;
    inputs with one are checked against it. `base_dir` is searched for inputs by name too
    (the folder of the recipe file being replayed).
    """
    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise MergeError(
            f"{out}: emaki writes merges as .safetensors; choose a name ending in .safetensors"
        )
    if out.exists() and not overwrite:
        raise MergeError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    remove_stale_partials(out.parent, older_than_s=STALE_PARTIAL_S)  # left by killed merges
    cache = hashes if hashes is not None else HashCache(None)
    with ExitStack() as stack:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emaki-hash")
        # On an error or Ctrl-C, do not wait for a hash still running.
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        session = _Session(
            cache, Path(base_dir) if base_dir is not None else None, slice_elements, stack, pool
        )
        plan = session.build(recipe)
        if out.resolve() in session.input_paths:
            raise MergeError(f"{out}: is one of the merge's inputs; write the result to a new file")
        _set_rebuilt_metadata(session, plan)
        _, layout_meta = _completed_recipe(session, plan, placeholders=True)
        entries = [(key, plan.info(key)) for key in plan.keys()]  # noqa: SIM118 (not a dict)
        total = sum(info.nbytes for _, info in entries)
        # The header is laid out with placeholder hashes of the final length and padded to that
        # length, so new merges (hashed while writing) and replays (hashes known) match byte
        # for byte.
        reserved = len(safetensors_header(entries, layout_meta)) - 8
        writer = stack.enter_context(SafetensorsWriter(out, entries, layout_meta))
        done = 0
        for key, info in entries:
            for start in range(0, info.numel, slice_elements):
                count = min(slice_elements, info.numel - start)
                writer.write(plan.read(key, start, count))
                done += count * info.dtype.itemsize
                if progress is not None:
                    progress(done, total)
        final_recipe, metadata = _completed_recipe(session, plan, placeholders=False)
        header = safetensors_header(entries, metadata, min_length=reserved)
        if len(header) - 8 != reserved:
            raise MergeError(f"{out}: internal error: metadata grew after hashing")
        writer.commit(metadata)
    return MergeResult(
        out,
        final_recipe,
        metadata,
        time.perf_counter() - started,
        total,
        session.rebuilt,
        dict(plan.bake.unmatched) if plan.bake is not None else {},
    )


def _set_rebuilt_metadata(session: _Session, plan: MergePlan) -> None:
    """Give every recomputed input the metadata its file would have had (depth first)."""
    opened, _ = session.inputs[id(plan)]
    for item in opened.values():
        if isinstance(item.source, MergePlan):
            _set_rebuilt_metadata(session, item.source)
            _, item.source.metadata = _completed_recipe(session, item.source, placeholders=False)
            item.metadata = item.source.metadata
