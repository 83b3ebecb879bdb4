# entrypoint.R - starts the API in plumber.R.
#
# The container runs it as `tini -- Rscript /app/entrypoint.R`: R ignores
# SIGTERM when it is PID 1, tini (PID 1) forwards signals and reaps children.
#
# Settings (environment variables):
#   HOST     address to listen on (default 0.0.0.0)
#   PORT     port to listen on (default 8000)
#   WORKERS  background R processes for slow endpoints such as /wait (default 4)

library(plumber)
library(future)

host <- Sys.getenv("HOST", "0.0.0.0")
port <- as.integer(Sys.getenv("PORT", "8000"))
workers <- as.integer(Sys.getenv("WORKERS", "4"))

# promises::future_promise() hands slow work to these workers and keeps the
# main R process free to answer other requests. "multicore" forks the running
# R process, which is quick and needs no extra sockets. A fixed number of
# workers is used because a CPU limit of one core would otherwise leave a
# single worker and /wait would queue.
plan(multicore, workers = workers)

# plumber.R sits next to this file; the image's working directory is /app.
api <- pr("plumber.R")

message(sprintf("plumber API listening on %s:%d (docs at /__docs__/)", host, port))
pr_run(api, host = host, port = port, docs = TRUE, quiet = TRUE)
