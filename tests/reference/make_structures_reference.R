# Regenerates structures_reference.json and the CSVs it refers to: nlme gls/lme fits
# with level-1 error structures (and glmmTMB's counterparts), REML and ML.
# Run from this folder: Rscript make_structures_reference.R
# Needs nlme, glmmTMB, jsonlite, mlmRev (for egsingle.csv, written by
# make_nested_reference.R) and bodyweight.csv (written by make_more_reference.R).
suppressPackageStartupMessages({library(nlme); library(glmmTMB); library(jsonlite)})

# ---- data -------------------------------------------------------------------------
# orthodont_waves.csv: nlme::Orthodont with wave = 1..4 for ages 8, 10, 12, 14.
orth <- as.data.frame(nlme::Orthodont)
orth <- data.frame(Subject = as.character(orth$Subject), Sex = as.character(orth$Sex),
  age = orth$age, wave = as.integer((orth$age - 6) / 2), distance = orth$distance)
orth <- orth[order(orth$Subject, orth$wave), ]
write.csv(orth, "orthodont_waves.csv", row.names = FALSE)
# orthodont_gaps.csv: the same with occasions removed by a fixed rule, so that gaps
# matter (under AR(1) waves 1 and 3 are rho^2 apart): with subjects in sorted order
# (k = 1..27), drop wave 2 when k %% 3 == 1, wave 3 when k %% 3 == 2, and wave 4
# as well as wave 2 when k %% 9 == 0 (nobody loses wave 1).
subj <- sort(unique(orth$Subject))
k <- match(orth$Subject, subj)
drop <- (k %% 3 == 1 & orth$wave == 2) | (k %% 3 == 2 & orth$wave == 3) |
  (k %% 9 == 0 & orth$wave %in% c(2, 4))
write.csv(orth[!drop, ], "orthodont_gaps.csv", row.names = FALSE)
# dialyzer.csv: nlme::Dialyzer, 20 dialyzers (Subject), QB (blood flow 200/300 dL/min)
# as the "treatment", 7 transmembrane pressures per dialyzer: wave = nlme's index 1..7.
dia <- as.data.frame(nlme::Dialyzer)
dia <- data.frame(Subject = as.integer(as.character(dia$Subject)), QB = as.integer(as.character(dia$QB)),
  pressure = dia$pressure, wave = as.integer(dia$index), rate = dia$rate)
dia <- dia[order(dia$Subject, dia$wave), ]
write.csv(dia, "dialyzer.csv", row.names = FALSE)

ch <- function(...) c(...)
dat <- list(
  orthodont_waves = read.csv("orthodont_waves.csv", colClasses = c(Subject = "character", Sex = "character")),
  orthodont_gaps = read.csv("orthodont_gaps.csv", colClasses = c(Subject = "character", Sex = "character")),
  dialyzer = read.csv("dialyzer.csv"),
  bodyweight = read.csv("bodyweight.csv", colClasses = c(Rat = "character", Diet = "character")),
  egsingle = read.csv("egsingle.csv"))
# egsingle: wave = year + 3.5 (1..6); pupils enter late and 17 skip a year
dat$egsingle$wave <- as.integer(round(dat$egsingle$year + 3.5))

# ---- models -------------------------------------------------------------------------
# Each: engine, data, id column, fixed formula, and the nlme arguments as R code.
# Structure names follow R's mmrm: what the fit is in mmrm's terms.
O <- "distance ~ age * Sex"; OF <- "distance ~ Sex * factor(wave)"
models <- list(
  orth_ar1 = list(structure = "ar1", data = "orthodont_waves", id = "Subject", fixed = O,
    correlation = "corAR1(form = ~ wave | Subject)"),
  orth_gaps_ar1 = list(structure = "ar1", data = "orthodont_gaps", id = "Subject", fixed = O,
    correlation = "corAR1(form = ~ wave | Subject)"),
  orth_cs = list(structure = "cs", data = "orthodont_waves", id = "Subject", fixed = O,
    correlation = "corCompSymm(form = ~ wave | Subject)"),
  orth_diag = list(structure = "diag", data = "orthodont_waves", id = "Subject", fixed = O,
    weights = "varIdent(form = ~ 1 | wave)"),
  orth_gaps_diag = list(structure = "diag", data = "orthodont_gaps", id = "Subject", fixed = O,
    weights = "varIdent(form = ~ 1 | wave)"),
  orth_ar1h = list(structure = "ar1h", data = "orthodont_waves", id = "Subject", fixed = O,
    correlation = "corAR1(form = ~ wave | Subject)", weights = "varIdent(form = ~ 1 | wave)"),
  orth_csh = list(structure = "csh", data = "orthodont_waves", id = "Subject", fixed = O,
    correlation = "corCompSymm(form = ~ wave | Subject)", weights = "varIdent(form = ~ 1 | wave)"),
  # homogeneous Toeplitz: an AR(T-1) correlation spans every positive-definite
  # Toeplitz correlation matrix of size T
  orth_toep = list(structure = "toep", data = "orthodont_waves", id = "Subject", fixed = O,
    correlation = "corARMA(form = ~ wave | Subject, p = 3)"),
  orth_toeph = list(structure = "toeph", data = "orthodont_waves", id = "Subject", fixed = O,
    correlation = "corARMA(form = ~ wave | Subject, p = 3)", weights = "varIdent(form = ~ 1 | wave)"),
  # the unstructured MMRM: a correlation per pair of waves and a variance per wave
  orth_us = list(structure = "us", data = "orthodont_waves", id = "Subject", fixed = OF,
    correlation = "corSymm(form = ~ wave | Subject)", weights = "varIdent(form = ~ 1 | wave)"),
  orth_gaps_us = list(structure = "us", data = "orthodont_gaps", id = "Subject", fixed = OF,
    correlation = "corSymm(form = ~ wave | Subject)", weights = "varIdent(form = ~ 1 | wave)"),
  dialyzer_us = list(structure = "us", data = "dialyzer", id = "Subject", fixed = "rate ~ factor(QB) * factor(wave)",
    correlation = "corSymm(form = ~ wave | Subject)", weights = "varIdent(form = ~ 1 | wave)"),
  dialyzer_ar1 = list(structure = "ar1", data = "dialyzer", id = "Subject", fixed = "rate ~ factor(QB) * factor(wave)",
    correlation = "corAR1(form = ~ wave | Subject)"),
  # continuous-time AR(1) on unequally spaced days (1, 8, ..., 36, 43, 44, 50, 57, 64)
  bodyweight_sp_exp = list(structure = "sp_exp", data = "bodyweight", id = "Rat", fixed = "weight ~ Time * Diet",
    correlation = "corCAR1(form = ~ Time | Rat)"),
  egsingle_ar1 = list(structure = "ar1", data = "egsingle", id = "childid",
    fixed = "math ~ year * (lowinc + female)", correlation = "corAR1(form = ~ wave | childid)"),
  # lme: random effects plus a level-1 structure
  orth_lme_slope_ar1 = list(structure = "ar1", engine = "lme", data = "orthodont_waves", id = "Subject", fixed = O,
    random = "~ age | Subject", correlation = "corAR1(form = ~ wave | Subject)"),
  orth_lme_intercept_ar1 = list(structure = "ar1", engine = "lme", data = "orthodont_waves", id = "Subject", fixed = O,
    random = "~ 1 | Subject", correlation = "corAR1(form = ~ wave | Subject)"),
  orth_gaps_lme_intercept_ar1 = list(structure = "ar1", engine = "lme", data = "orthodont_gaps", id = "Subject",
    fixed = O, random = "~ 1 | Subject", correlation = "corAR1(form = ~ wave | Subject)"),
  bodyweight_lme_slope_sp_exp = list(structure = "sp_exp", engine = "lme", data = "bodyweight", id = "Rat",
    fixed = "weight ~ Time * Diet", random = "~ Time | Rat", correlation = "corCAR1(form = ~ Time | Rat)"),
  egsingle_lme_slope_ar1 = list(structure = "ar1", engine = "lme", data = "egsingle", id = "childid",
    fixed = "math ~ year * (lowinc + female)", random = "~ year | childid",
    correlation = "corAR1(form = ~ wave | childid)"),
  # the same with nlme's iteration limits raised (the default stops at 50/50 iterations)
  egsingle_lme_slope_ar1_maxiter = list(structure = "ar1", engine = "lme", data = "egsingle", id = "childid",
    fixed = "math ~ year * (lowinc + female)", random = "~ year | childid",
    correlation = "corAR1(form = ~ wave | childid)",
    control = "lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msMaxEval = 2000)"))

num <- function(x) if (is.null(x)) NULL else unname(as.numeric(x))
named <- function(x) if (is.null(x) || length(x) == 0) NULL else as.list(x)
# rows kept as arrays (I()) so that a 1 x 1 matrix is still [[x]] in the JSON
mat <- function(m) lapply(seq_len(nrow(m)), function(i) I(unname(as.numeric(m[i, ]))))
# persons chosen for the marginal covariance: the first (in sorted id order) observed
# at every wave (every time), and the first with a gap or a missing wave if any
pick_people <- function(d, id, occ) {
  ids <- sort(unique(d[[id]]))
  allocc <- sort(unique(d[[occ]]))
  full <- NULL; gap <- NULL
  for (i in ids) {
    o <- sort(d[[occ]][d[[id]] == i])
    if (is.null(full) && length(o) == length(allocc)) full <- i
    if (is.null(gap) && length(o) < length(allocc) && length(o) >= 2 && any(diff(match(o, allocc)) > 1)) gap <- i
  }
  list(full = full, gap = gap)
}
person_cov <- function(fit, d, id, occ, who, engine) {
  if (is.null(who)) return(NULL)
  rows <- d[[id]] == who
  occs <- d[[occ]][rows]
  if (engine == "gls" && is.null(fit$modelStruct$corStruct)) {
    # getVarCov.gls refuses uncorrelated errors: sigma^2 times the squared SD ratios
    r <- coef(fit$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
    return(list(id = as.character(who), occasions = occs, matrix = mat(diag(fit$sigma^2 * r[as.character(occs)]^2)),
      computed_from = "sigma^2 * variance_sd_ratios^2 (getVarCov.gls does not handle uncorrelated errors)"))
  }
  m <- if (engine == "gls") getVarCov(fit, individual = as.character(who))
       else getVarCov(fit, individuals = as.character(who), type = "marginal")[[1]]
  list(id = as.character(who), occasions = occs, matrix = mat(unclass(m)))
}

# corSymm's coefficients come unnamed: name them cor(i,j) in nlme's order
cs_natural <- function(cs) {
  x <- coef(cs, unconstrained = FALSE)
  if (inherits(cs, "corSymm") && is.null(names(x))) {
    n <- round((1 + sqrt(1 + 8 * length(x))) / 2)
    pairs <- which(upper.tri(diag(n)), arr.ind = TRUE)
    pairs <- pairs[order(pairs[, 1], pairs[, 2]), , drop = FALSE]
    names(x) <- sprintf("cor(%d,%d)", pairs[, 1], pairs[, 2])
  }
  x
}
fit_nlme <- function(m, reml) {
  d <- dat[[m$data]]
  # nlme sorts rows within a group by the form's covariate only for its own use;
  # the rows are already in id, wave order (as the CSVs are written)
  d <- d[order(d[[m$id]], if (m$data == "bodyweight") d$Time else d$wave), ]
  engine <- if (is.null(m$engine)) "gls" else m$engine
  args <- paste0(if (engine == "gls") "gls(" else "lme(", m$fixed, ", data = d, method = '",
    if (reml) "REML" else "ML", "'",
    if (!is.null(m$random)) paste0(", random = ", m$random) else "",
    if (!is.null(m$correlation)) paste0(", correlation = ", m$correlation) else "",
    if (!is.null(m$weights)) paste0(", weights = ", m$weights) else "",
    if (!is.null(m$control)) paste0(", control = ", m$control) else "", ")")
  warn <- character()
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch(withCallingHandlers(eval(parse(text = args)),
    warning = function(w) {warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning")}),
    error = function(e) e)
  secs <- proc.time()[["elapsed"]] - t0
  base <- list(engine = paste0("nlme::", engine), structure = m$structure, data = m$data, id = m$id,
    call = args, control = m$control, fixed = m$fixed, random = m$random, correlation = m$correlation, weights = m$weights,
    REML = reml, seconds = secs, warnings = as.list(warn))
  if (inherits(fit, "error")) return(c(base, list(converged = FALSE, error = conditionMessage(fit))))
  tt <- summary(fit)$tTable
  df <- if (engine == "gls") setNames(rep(fit$dims$N - fit$dims$p, nrow(tt)), rownames(tt)) else tt[, "DF"]
  pcol <- "p-value"
  ms <- fit$modelStruct
  cs <- ms$corStruct; vs <- ms$varStruct
  occ <- if (m$data == "bodyweight") "Time" else "wave"
  who <- pick_people(d, m$id, occ)
  corr_full <- if (!is.null(cs) && !is.null(who$full)) mat(corMatrix(cs)[[as.character(who$full)]]) else NULL
  iv <- tryCatch({
    i <- intervals(fit, which = "var-cov")
    lapply(i[setdiff(names(i), "sigma")], function(x) if (is.matrix(x)) lapply(seq_len(nrow(x)),
      function(r) list(name = rownames(x)[r], lower = x[r, 1], est = x[r, 2], upper = x[r, 3])) else NULL)
  }, error = function(e) conditionMessage(e))
  re <- if (engine == "lme") {
    vc <- VarCorr(fit)
    list(varcorr = lapply(seq_len(nrow(vc)), function(i) list(name = rownames(vc)[i],
      variance = suppressWarnings(as.numeric(vc[i, "Variance"])), stddev = suppressWarnings(as.numeric(vc[i, "StdDev"])),
      corr = if ("Corr" %in% colnames(vc)) vc[i, "Corr"] else NULL)),
      random_covariance = mat(unclass(getVarCov(fit))))
  } else NULL
  c(base, list(converged = TRUE,
    fixef = named(if (engine == "gls") coef(fit) else fixef(fit)),
    se = named(tt[, "Std.Error"]), df = named(df), t = named(tt[, "t-value"]), p = named(tt[, pcol]),
    # natural scale: correlations (corAR1 Phi, corCompSymm Rho, corSymm the pairs
    # (1,2), (1,3), ..., (2,3), ... in that order, corARMA the AR coefficients Phi1..,
    # corCAR1 Phi = correlation at distance 1 of the form's covariate)
    correlation_params = if (!is.null(cs)) named(cs_natural(cs)) else NULL,
    correlation_params_unconstrained = if (!is.null(cs)) named(coef(cs, unconstrained = TRUE)) else NULL,
    # varIdent: ratio of each stratum's residual SD to the reference stratum's (=1)
    variance_sd_ratios = if (!is.null(vs)) named(coef(vs, unconstrained = FALSE, allCoef = TRUE)) else NULL,
    correlation_matrix_full_person = corr_full,
    sigma = fit$sigma, logLik = as.numeric(logLik(fit)), AIC = AIC(fit), BIC = BIC(fit),
    df_logLik = attr(logLik(fit), "df"), nobs = fit$dims$N,
    marginal_cov_full_person = person_cov(fit, d, m$id, occ, who$full, engine),
    marginal_cov_gap_person = person_cov(fit, d, m$id, occ, who$gap, engine),
    random_effects = re, intervals_var_cov = iv,
    numIter = if (!is.null(fit$numIter)) fit$numIter else NULL))
}

# glmmTMB: the structure as a random term over waves with the residual variance
# fixed at (near) zero (dispformula = ~0), as glmmTMB recommends for MMRM-type fits.
# In glmmTMB 1.1.5: us, toep (heterogeneous: a variance per wave), cs (heterogeneous),
# ar1 (homogeneous), diag (heterogeneous), exp (spatial exponential on a coordinate).
tmb_models <- list(
  orth_tmb_us = list(structure = "us", data = "orthodont_waves", id = "Subject",
    formula = "distance ~ Sex * factor(wave) + us(0 + factor(wave) | Subject)"),
  orth_tmb_toeph = list(structure = "toeph", data = "orthodont_waves", id = "Subject",
    formula = "distance ~ age * Sex + toep(0 + factor(wave) | Subject)"),
  orth_tmb_csh = list(structure = "csh", data = "orthodont_waves", id = "Subject",
    formula = "distance ~ age * Sex + cs(0 + factor(wave) | Subject)"),
  orth_tmb_ar1 = list(structure = "ar1", data = "orthodont_waves", id = "Subject",
    formula = "distance ~ age * Sex + ar1(0 + factor(wave) | Subject)"),
  orth_tmb_diag = list(structure = "diag", data = "orthodont_waves", id = "Subject",
    formula = "distance ~ age * Sex + diag(0 + factor(wave) | Subject)"),
  orth_gaps_tmb_us = list(structure = "us", data = "orthodont_gaps", id = "Subject",
    formula = "distance ~ Sex * factor(wave) + us(0 + factor(wave) | Subject)"),
  dialyzer_tmb_us = list(structure = "us", data = "dialyzer", id = "Subject",
    formula = "rate ~ factor(QB) * factor(wave) + us(0 + factor(wave) | Subject)"),
  dialyzer_tmb_toeph = list(structure = "toeph", data = "dialyzer", id = "Subject",
    formula = "rate ~ factor(QB) * factor(wave) + toep(0 + factor(wave) | Subject)"),
  # lme's random slope plus AR(1) where nlme stops at its iteration limit: the AR(1)
  # term takes the residual's place (dispformula = ~0), as in lme + corAR1
  egsingle_tmb_slope_ar1 = list(structure = "ar1", data = "egsingle", id = "childid",
    formula = "math ~ year * (lowinc + female) + (year | childid) + ar1(0 + factor(wave) | childid)"))

fit_tmb <- function(m, reml) {
  d <- dat[[m$data]]
  d$wave <- factor(d$wave, levels = sort(unique(d$wave)))
  warn <- character()
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch(withCallingHandlers(
    glmmTMB(as.formula(m$formula), data = d, dispformula = ~0, REML = reml),
    warning = function(w) {warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning")}),
    error = function(e) e)
  secs <- proc.time()[["elapsed"]] - t0
  base <- list(engine = "glmmTMB", structure = m$structure, data = m$data, id = m$id, formula = m$formula,
    dispformula = "~0", REML = reml, seconds = secs, warnings = as.list(warn))
  if (inherits(fit, "error")) return(c(base, list(converged = FALSE, error = conditionMessage(fit))))
  co <- summary(fit)$coefficients$cond
  # the structured term is the last random term (after any (year | id))
  vcs <- VarCorr(fit)$cond
  v <- vcs[[length(vcs)]]
  c(base, list(converged = fit$fit$convergence == 0 && isTRUE(fit$sdr$pdHess),
    optimizer_convergence = fit$fit$convergence, optimizer_message = fit$fit$message,
    pdHess = fit$sdr$pdHess,
    fixef = named(fixef(fit)$cond), se = named(co[, "Std. Error"]), z = named(co[, "z value"]),
    p = named(co[, "Pr(>|z|)"]),
    logLik = as.numeric(logLik(fit)), AIC = AIC(fit), BIC = BIC(fit), df_logLik = attr(logLik(fit), "df"),
    # glmmTMB's logLik() is NA when its Hessian is not positive definite; minus the
    # optimizer's objective is the same (restricted) log-likelihood
    minus_objective = -fit$fit$objective, nobs = nobs(fit), sigma_residual = sigma(fit),
    # the structure's covariance across all waves (the residual variance is ~0)
    waves = levels(d$wave), covariance = mat(unclass(v)), correlation = mat(attr(v, "correlation")),
    random_other = if (length(vcs) > 1) lapply(vcs[-length(vcs)], function(x) mat(unclass(x)[, , drop = FALSE])) else NULL,
    theta = unname(getME(fit, "theta"))))
}

out <- list(fits = list())
for (name in names(models)) for (reml in c(TRUE, FALSE)) {
  key <- paste0(name, if (reml) "_reml" else "_ml")
  out$fits[[key]] <- c(list(name = name), fit_nlme(models[[name]], reml))
  message(key, ": ", out$fits[[key]]$converged, " ", round(out$fits[[key]]$seconds, 1), "s")
}
for (name in names(tmb_models)) for (reml in c(TRUE, FALSE)) {
  key <- paste0(name, if (reml) "_reml" else "_ml")
  out$fits[[key]] <- c(list(name = name), fit_tmb(tmb_models[[name]], reml))
  message(key, ": ", out$fits[[key]]$converged, " ", round(out$fits[[key]]$seconds, 1), "s")
}
out$datasets <- list(
  orthodont_waves = list(file = "orthodont_waves.csv", source = "nlme::Orthodont", id = "Subject", occasion = "wave"),
  orthodont_gaps = list(file = "orthodont_gaps.csv", source = "nlme::Orthodont, occasions removed by a fixed rule",
    id = "Subject", occasion = "wave"),
  dialyzer = list(file = "dialyzer.csv", source = "nlme::Dialyzer", id = "Subject", occasion = "wave"),
  bodyweight = list(file = "bodyweight.csv", source = "nlme::BodyWeight", id = "Rat", occasion = "Time"),
  egsingle = list(file = "egsingle.csv", source = "mlmRev::egsingle", id = "childid",
    occasion = "wave = year + 3.5 (computed, not a column of the CSV)"))
out$versions <- list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
  glmmTMB = as.character(packageVersion("glmmTMB")), TMB = as.character(packageVersion("TMB")))
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE),
  "structures_reference.json")
