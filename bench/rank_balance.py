"""Per-rank token load per optimizer step under data parallelism, old dealing vs the balanced sampler.

Every process waits for the slowest at each gradient all-reduce, so what matters is the largest
rank's tokens in a step against the smallest's. Old: a step's examples sorted longest-first, cut
into micro-batches of ``micro_batch_size`` and dealt round-robin (rank 0 always got the longest).
New: transformers' ``BatchRebalanceSampler`` (utils/batching.balanced_sampler). Both hold the same
examples per step. Tokens are counted with the embedded tiny base's LLaMA-style tokenizer on the
seed's data (``../shared/huatuo/llama_data.json``, else data/llama_data.json), padded positions of
the packed micro-batches included.

    python bench/rank_balance.py --world_size 4 --micro_batch_size 8
"""

import logging
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
SEED_DATA = REPO_ROOT.parent / "shared" / "huatuo" / "llama_data.json"


def main(
    world_size: int = 4, batch_size: int = 128, micro_batch_size: int = 8, cutoff_len: int = 256, data_path: str = ""
):
    from utils.data.prompter import Prompter, tokenize_records
    from utils.data.records import load_records
    from utils.model import loading
    from utils.train import batching

    logging.disable(logging.WARNING)
    data = data_path or str(SEED_DATA if SEED_DATA.is_file() else REPO_ROOT / "data" / "llama_data.json")
    tokenizer = loading.load_tokenizer(loading.resolve_base_model(""))
    examples, _ = tokenize_records(tokenizer, Prompter(), load_records(data).records, cutoff_len)
    lengths = [len(e["input_ids"]) for e in examples]
    collator = batching.PackingCollator(tokenizer.pad_token_id, pack_len=cutoff_len)
    per_rank, steps = batch_size // world_size // micro_batch_size, len(lengths) // batch_size  # full steps only

    def spreads(loads_of_step) -> list[float]:
        return [max(loads) / min(loads) for loads in map(loads_of_step, range(steps))]

    order = list(batching.SeededShuffle(len(lengths), seed=42))

    def old(step: int) -> list[int]:
        ranked = sorted(order[step * batch_size : (step + 1) * batch_size], key=lambda i: -lengths[i])
        mbs = [ranked[k : k + micro_batch_size] for k in range(0, batch_size, micro_batch_size)]
        return [
            sum(collator.positions_of([lengths[i] for i in mb]) for mb in mbs[r::world_size]) for r in range(world_size)
        ]

    from transformers.trainer_pt_utils import BatchRebalanceSampler

    def loads_by(sampler_class):
        samplers = [
            sampler_class(lengths, batch_size, world_size, per_rank, shuffle=True, seed=42, rank=r, drop_last=False)
            for r in range(world_size)
        ]
        mbs = [list(s) for s in samplers]
        return lambda step: [
            sum(
                collator.positions_of([lengths[i] for i in mb])
                for mb in mbs[r][step * per_rank : (step + 1) * per_rank]
            )
            for r in range(world_size)
        ]

    print(
        f"{data}: {len(lengths)} examples, {steps} full steps of {batch_size}; {world_size} ranks x micro-batch "
        f"{micro_batch_size} x {per_rank} accumulation"
    )
    rows = (
        ("sorted, dealt round-robin (before)", old),
        ("transformers' BatchRebalanceSampler (padded-cost grouping)", loads_by(BatchRebalanceSampler)),
        ("token-balanced grouping (now)", loads_by(batching.TokenBalancedSampler)),
    )
    for name, fn in rows:
        s = spreads(fn)
        first = fn(0)
        print(
            f"{name}: max/min rank tokens per step mean {statistics.mean(s):.3f}, worst {max(s):.3f}; step 1 per "
            f"rank: {first}"
        )


if __name__ == "__main__":
    import fire

    fire.Fire(main)
