"""The HTTP edge: the OpenAI API and upstream-compatible routes, served by aiohttp inside trio."""
