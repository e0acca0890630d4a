"""ember serve: OpenAI-compatible and KServe v2 HTTP serving over a versioned model repository.

Needs the serving extras (`pip install 'ember[serve]'`: fastapi, uvicorn, prometheus-client);
ember itself imports nothing from here.
"""
