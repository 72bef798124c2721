"""Drives selfcloud's OpenAI-compatible API with the official `openai` client.

Usage: openai_client.py BASE_URL TOKEN   (BASE_URL is the instance's /v1, e.g. http://…/i/alice/v1)
Prints one JSON object with what each call returned; any client error is raised (non-zero exit).
"""
import json
import sys

import openai

base_url, token = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=60)
messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]

models = [m.id for m in client.models.list()]
chat = client.chat.completions.create(model=models[0], messages=messages, max_tokens=24, temperature=0, seed=1)
stream = client.chat.completions.create(model=models[0], messages=messages, max_tokens=24, temperature=0, seed=1, stream=True,
                                        stream_options={"include_usage": True})
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
embedding = client.embeddings.create(model="all-minilm-l6-v2", input=["hello world", "goodbye"])
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    unknown_model = None
except openai.NotFoundError as e:
    unknown_model = e.status_code

print(json.dumps({
    "models": models,
    "chat_text": chat.choices[0].message.content,
    "chat_finish": chat.choices[0].finish_reason,
    "chat_usage": chat.usage.model_dump(),
    "stream_text": "".join(pieces),
    "stream_chunks": len(pieces),
    "stream_finish": finish,
    "stream_usage": usage,
    "embedding_count": len(embedding.data),
    "embedding_dims": len(embedding.data[0].embedding),
    "unknown_model_status": unknown_model,
}))
