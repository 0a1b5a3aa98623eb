"""Target log-probabilities under a base model with a PEFT LoRA adapter, as transformers and
peft compute them: the yardstick for adapters diffuse writes.

Reads one JSON object on stdin:
  {"model": "<HF directory, or the directory holding the GGUF>",
   "gguf_file": "<file name inside model>"   (optional: load a GGUF through transformers),
   "adapter": "<PEFT adapter directory>"     (optional),
   "sequences": [[[prompt token ids], [target token ids]], ...],
   "chat": [{"role": "user", "content": "..."}]   (optional),
   "peft_adapter": {"dir", "r", "lora_alpha", "target_modules", "use_rslora", "seed"}   (optional)}
and writes {"base_logprobs": [...], "logprobs": [...], "chat_ids": [...]} on stdout: for each
sequence, sum_t log p(target_t | prompt, target_<t) in float32 compute without and (when an
adapter is given) with the adapter; when a chat is given, the ids of the model directory's
tokenizer's chat template with the generation prompt; and, when peft_adapter is given, PEFT
makes an adapter of its own (A and B random, values rounded to bfloat16), saves it in bfloat16
to peft_adapter.dir and gives the log-probabilities under it ("peft_adapter_logprobs"). Token ids are taken as given,
so both sides score the same tokens. A JSON list of such objects gives a list of results (one
Python start for several models).

  python tools/reference/peft_logprobs.py < request.json
"""

import json
import sys

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer


def sequence_logprobs(model, sequences):
    out = []
    with torch.no_grad():
        for prompt, target in sequences:
            ids = torch.tensor([prompt + target])
            logits = model(input_ids=ids).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            start = len(prompt) - 1
            total = sum(logp[start + i, tok].item() for i, tok in enumerate(target))
            out.append(total)
    return out


def answer(request):
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kwargs = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}
    if request.get("gguf_file"):
        kwargs["gguf_file"] = request["gguf_file"]
    base = AutoModelForCausalLM.from_pretrained(request["model"], **kwargs)
    base.eval()
    result = {"base_logprobs": sequence_logprobs(base, request["sequences"])}
    if request.get("adapter"):
        model = PeftModel.from_pretrained(base, request["adapter"])
        model.eval()
        result["logprobs"] = sequence_logprobs(model, request["sequences"])
        base = model.unload()
    if request.get("peft_adapter"):
        spec = request["peft_adapter"]
        torch.manual_seed(spec["seed"])
        config = LoraConfig(
            r=spec["r"],
            lora_alpha=spec["lora_alpha"],
            target_modules=spec["target_modules"],
            use_rslora=spec["use_rslora"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
        model.eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(param.bfloat16().float())
        result["peft_adapter_logprobs"] = sequence_logprobs(model, request["sequences"])
        model.to(torch.bfloat16).save_pretrained(spec["dir"])
    if request.get("chat"):
        tokenizer = AutoTokenizer.from_pretrained(request["model"])
        ids = tokenizer.apply_chat_template(request["chat"], add_generation_prompt=True, tokenize=True, return_dict=False)
        result["chat_ids"] = [int(i) for i in ids]
    return result


def main():
    request = json.load(sys.stdin)
    result = [answer(r) for r in request] if isinstance(request, list) else answer(request)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
