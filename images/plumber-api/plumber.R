# plumber.R - the example API that bramble deploys on every new cluster.
#
# Run it with entrypoint.R (which also sets up the background workers that
# /wait needs). Try it:
#   curl 'http://localhost:8000/parity?int=15'     -> odd
#   curl 'http://localhost:8000/wait'              -> {"time":"..."} after 5 s
#   curl -X POST http://localhost:8000/fail        -> /health answers 500 from now on
#   curl -X POST http://localhost:8000/quit        -> the R process exits
#   open http://localhost:8000/__docs__/           -> Swagger UI

library(promises)

# Set to FALSE by POST /fail. Kubernetes' liveness probe on /health then sees
# 500s and restarts the container.
healthy <- TRUE

#* @apiTitle bramble example API
#* @apiDescription A small R Plumber API: parity of an integer, a slow endpoint
#*   that does not block the others, and switches that break the health check or
#*   stop the process so you can watch Kubernetes heal it.

#* Is an integer odd or even?
#* @param int An integer, e.g. 15 (any number of digits, with an optional sign)
#* @serializer text
#* @get /parity
function(int = "", res) {
  # Validate by hand so any malformed input gets a clear 400 rather than an
  # R error (500). Parity only needs the last digit, so huge numbers work too.
  int <- trimws(int)
  if (length(int) != 1 || !grepl("^[+-]?[0-9]+$", int)) {
    res$status <- 400
    return(sprintf(
      "Bad request: parameter 'int' must be an integer like 15 or -4, got '%s'",
      paste(int, collapse = ",")
    ))
  }
  last_digit <- as.integer(substring(int, nchar(int)))
  if (last_digit %% 2 == 1) "odd" else "even"
}

#* Wait 5 seconds, then say what time it is. Runs in a background R process
#* (future + promises), so other requests are answered in the meantime.
#* @serializer unboxedJSON
#* @get /wait
function() {
  future_promise({
    Sys.sleep(5)
    list(time = format(Sys.time(), "%Y-%m-%dT%H:%M:%OS3Z", tz = "UTC"))
  })
}

#* Make the health check fail from now on.
#* @serializer text
#* @post /fail
function() {
  healthy <<- FALSE
  "health check will now fail"
}

#* Stop the R process (the container exits and Kubernetes restarts it).
#* @serializer text
#* @post /quit
function() {
  # Answer first, quit a moment later.
  later::later(function() quit(save = "no", status = 0), delay = 0.2)
  "bye"
}

#* Health check for liveness and readiness probes.
#* @serializer text
#* @get /health
function(res) {
  if (!healthy) {
    res$status <- 500
    return("FAIL")
  }
  "OK"
}
