"""Run by test_distributed.py under torchrun: 2 CPU processes (gloo) train a tiny model with
Trainer(data_collator=ResponseOnlyCollator(tok)) on raw messages; every batch's masks are checked."""

import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from respmask import ResponseOnlyCollator  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402

out_dir = Path(sys.argv[1])
rank = int(os.environ["RANK"])
tok = fixture_tokenizer("qwen2_5")
CITIES = ["Paris", "London", "Tokyo", "Rome", "Oslo", "Lima", "Cairo", "Delhi"]
rows = [{"row": i, "messages": [
    {"role": "system", "content": "Answer with the city."},
    {"role": "user", "content": f"Where is landmark number {i}?"},
    {"role": "assistant", "content": CITIES[i % len(CITIES)]},
]} for i in range(16)]
seen: list[int] = []
checked = 0


class CheckingCollator(ResponseOnlyCollator):
    def __call__(self, features):
        global checked
        batch = super().__call__(features)
        for r, f in enumerate(features):
            ids, labels = batch["input_ids"][r].tolist(), batch["labels"][r].tolist()
            trained = tok.decode([i for i, l in zip(ids, labels) if l != -100])
            assert trained == f["messages"][-1]["content"] + "<|im_end|>", (rank, trained)
            seen.append(int(f["row"]))
        checked += 1
        return batch


torch.manual_seed(0)
config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
model = transformers.LlamaForCausalLM(config)
args = transformers.TrainingArguments(
    output_dir=str(out_dir / "run"), per_device_train_batch_size=2, max_steps=6, learning_rate=5e-3, logging_steps=1,
    report_to=[], use_cpu=True, ddp_backend="gloo", save_strategy="no", remove_unused_columns=False,
    disable_tqdm=True, seed=0,
)
trainer = transformers.Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                               data_collator=CheckingCollator(tok))
result = trainer.train()
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
(out_dir / f"rank{rank}.json").write_text(json.dumps({
    "rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "checked_batches": checked, "seen": seen,
    "losses": losses, "training_loss": result.training_loss,
    "finite": all(math.isfinite(x) for x in losses) and math.isfinite(result.training_loss),
}))
# Leave without interpreter finalization. Gloo's worker threads free finished collectives (which hold
# Python-owned tensors) asynchronously; one that does so while the interpreter finalizes must take the
# GIL, gets pthread_exit'ed inside a noexcept destructor and aborts the rank ("terminate called without an
# active exception", seen about once in 30 runs; core dump: AsyncAllgatherWork::~ -> decref_pyobject ->
# take_gil -> PyThread_exit_thread). The report is written and flushed; nothing else is left to do.
torch.distributed.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
