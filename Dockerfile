# A small image that runs the bot as a non-root user, with its SQLite database on a volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot.py ./
COPY cogs ./cogs
COPY imaginebot ./imaginebot
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 imagine && mkdir /data && chown imagine /data
COPY --from=build /install /usr/local
WORKDIR /app
# The default DATABASE_URL (sqlite:///data/imagine.db, relative to /app) lands on the volume too, for an --env-file
# that sets it, or leaves it empty.
RUN ln -s /data /app/data
COPY --chown=imagine bot.py ./
COPY --chown=imagine cogs ./cogs
COPY --chown=imagine imaginebot ./imaginebot
USER imagine
ENV DATABASE_URL=sqlite:////data/imagine.db \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
CMD ["python", "bot.py"]
