"""Shared fixtures: the real default tokenizer, a tiny random-initialised Llama over its vocabulary (fast unit
tests), and the real default model (integration tests)."""

import pytest
import torch


@pytest.fixture(scope="session")
def default_model():
    from opd_studio.model import load_model

    return load_model("default", device="cpu")


@pytest.fixture(scope="session")
def tokenizer(default_model):
    return default_model[1]


def random_llama(tokenizer, embedding_scale: float):
    """A random 2-layer Llama over the real vocabulary. Random init gives near-uniform predictions; scaling the
    embeddings makes distributions peaked, like a real model's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(embedding_scale)
    return model


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    # scaled to saturation, so that tests on ranks, top-k and KL have sharp distributions to measure
    return random_llama(tokenizer, 40)


ADD = {"id": "add-17-25",
       "messages": [{"role": "user", "content": "What is 17 + 25?"},
                    {"role": "assistant", "content": "17 + 25 = 32."}],
       "hints": [{"message": 1, "char": 10, "text": " (Hint: 7 + 5 = 12, so carry the 1.) "}],
       "error": {"message": 1, "char_start": 10, "char_end": 12}}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

MULTI_TURN = {
    "id": "weather-paris", "tools": TOOLS,
    "messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C sunny"},
        {"role": "assistant", "content": "It is 18°C and sunny in Paris."},
        {"role": "user", "content": "And in Rome?"},
        {"role": "assistant", "content": "Rome is 25°C 🌞 and clear."},
    ]}

# A hint at the first response token.
FIRST_TOKEN = {"id": "first-token",
               "messages": [{"role": "user", "content": "Please add 48 and 37 for me."},
                            {"role": "assistant", "content": "Sure! 48 + 37 = 75. Let me know if you need more."}],
               "hints": [{"message": 1, "char": 0, "text": "(Hint: 8 + 7 = 15, carry the 1.) "}],
               "error": {"message": 1, "char_start": 16, "char_end": 18}}

# Two assistant turns; an inline hint, a feedback turn and a template hint, the last two in the same turn.
SEVERAL_HINTS = {
    "id": "weather-multi",
    "messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "It is 18°C and sunny in Paris."},
        {"role": "user", "content": "And in Rome?"},
        {"role": "assistant", "content": "Rome is 25°C and clear, with a light wind from the sea."},
    ],
    "hints": [{"message": 2, "char": 6, "text": " (check the report) "},
              {"message": 4, "char": 8, "text": "Rome reported 31°C today.", "placement": "feedback"},
              {"message": 4, "char": 24, "text": "wind", "placement": "template",
               "template": " [note: {hint} is calm] "}],
    "error": {"message": 4, "char_start": 8, "char_end": 10}}
