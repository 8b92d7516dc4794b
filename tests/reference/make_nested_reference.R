# Regenerates lme4_nested_reference.json and the CSVs it refers to (egsingle.csv,
# pixel.csv): three-level longitudinal models in lme4/lmerTest, REML and ML.
# Run from this folder: Rscript make_nested_reference.R
# Needs lme4, lmerTest, mlmRev, nlme, jsonlite (Debian: r-cran-lme4 r-cran-lmertest
# r-cran-mlmrev r-cran-nlme r-cran-jsonlite).
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite); library(mlmRev)})

# mlmRev::egsingle (Chicago Public Schools, Bryk & Raudenbush 1992 / HLM's EG data):
# 1721 pupils in 60 schools, math (IRT scale) at grades 1-6, year = grade centred at
# 3.5 (so -2.5..2.5 in steps of 1). schoolid and childid are factors whose labels
# are numbers: they are written as those numbers. Every child sits in one school
# (checked below), so child ids are unique in the whole study.
eg <- mlmRev::egsingle
stopifnot(all(tapply(eg$schoolid, eg$childid, function(x) length(unique(x))) == 1))
egcsv <- data.frame(
  schoolid = as.integer(as.character(eg$schoolid)),
  childid = as.numeric(as.character(eg$childid)),  # 9-digit numbers: exact in a double
  year = eg$year, grade = eg$grade, math = eg$math,
  retained = as.integer(as.character(eg$retained)),
  female = as.integer(eg$female == "Female"),
  black = as.integer(as.character(eg$black)),
  hispanic = as.integer(as.character(eg$hispanic)),
  size = eg$size, lowinc = eg$lowinc, mobility = eg$mobility)
stopifnot(all(egcsv$childid == round(egcsv$childid)))
write.csv(format(egcsv, digits = 15, scientific = FALSE, trim = TRUE), "egsingle.csv",
  row.names = FALSE, quote = FALSE)

# nlme::Pixel (Pinheiro & Bates 2000, appendix A.23): pixel intensity of CT scans of
# lymph nodes on the left and right side of 10 dogs at up to 14 days after injection.
px <- nlme::Pixel
pxcsv <- data.frame(Dog = as.integer(as.character(px$Dog)), Side = as.character(px$Side),
  day = px$day, pixel = px$pixel)
write.csv(pxcsv, "pixel.csv", row.names = FALSE)

# fit on the CSVs as read back: numeric ids become factors with levels sorted as
# numbers (lme4 converts a grouping variable with factor(); interactions such as
# schoolid:childid get levels "school:child" from lme4's own construction)
dat <- list(egsingle = read.csv("egsingle.csv"), pixel = read.csv("pixel.csv"))

cond <- "math ~ year * (lowinc + female + black + hispanic)"
models <- list(
  eg_means = list(data = "egsingle",
    formula = "math ~ 1 + (1 | schoolid) + (1 | schoolid:childid)"),
  eg_growth = list(data = "egsingle",
    formula = "math ~ year + (year | schoolid) + (year | schoolid:childid)"),
  eg_conditional_colon = list(data = "egsingle",
    formula = paste(cond, "+ (year | schoolid) + (year | schoolid:childid)")),
  eg_conditional_slash = list(data = "egsingle",
    formula = paste(cond, "+ (year | schoolid/childid)")),
  eg_conditional_unique_ids = list(data = "egsingle",
    formula = paste(cond, "+ (year | childid) + (year | schoolid)")),
  eg_conditional_school_intercept = list(data = "egsingle",
    formula = paste(cond, "+ (1 | schoolid) + (year | schoolid:childid)")),
  pixel = list(data = "pixel",
    formula = "pixel ~ day + I(day^2) + (day | Dog) + (1 | Dog:Side)"))

col <- function(co, j) setNames(as.list(co[, j]), rownames(co))
out <- list()
for (name in names(models)) for (reml in c(TRUE, FALSE)) {
  m <- models[[name]]; d <- dat[[m$data]]
  warn <- character()
  fit <- withCallingHandlers(
    lmerTest::lmer(as.formula(m$formula), data = d, REML = reml),
    warning = function(w) {warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning")})
  co <- summary(fit)$coefficients
  vc <- as.data.frame(VarCorr(fit))
  re <- ranef(fit, condVar = TRUE)
  # one entry per grouping factor, as lme4 names it (e.g. "schoolid:childid",
  # "childid:schoolid" for schoolid/childid): the first 5 levels in lme4's order,
  # their BLUPs and the conditional covariance matrix (k x k, column-major) of each
  # the same model refitted with a much tighter optimizer tolerance: where lme4's
  # default stops short (the max|grad| warnings on egsingle, whose lowinc is in
  # percent), this is the optimum an engine should reach or beat
  tight <- suppressWarnings(update(fit, control = lmerControl(optimizer = "nloptwrap",
    optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, maxeval = 1e5))))
  levels_out <- lapply(names(re), function(g) {
    r <- re[[g]]; cv <- attr(r, "postVar")
    list(group = g, n_levels = nrow(r), terms = I(colnames(r)),
      ranef_first5 = lapply(1:5, function(i) c(list(id = rownames(r)[i]), as.list(r[i, , drop = FALSE]))),
      ranef_condvar_first5 = lapply(1:5, function(i) as.vector(cv[, , i])))
  })
  names(levels_out) <- names(re)
  out[[paste0(name, if (reml) "_reml" else "_ml")]] <- list(
    name = name, data = m$data, formula = m$formula, REML = reml,
    fixef = as.list(fixef(fit)), se = col(co, "Std. Error"),
    df_satterthwaite = col(co, "df"), p_satterthwaite = col(co, "Pr(>|t|)"),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
      var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    sigma = sigma(fit), logLik = as.numeric(logLik(fit)), AIC = AIC(fit), BIC = BIC(fit),
    deviance_or_REMLcrit = if (reml) REMLcrit(fit) else deviance(fit),
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)), singular = isSingular(fit),
    ranef = levels_out,
    # lme4's theta: Lambda's lower triangle, column-wise, per random-effects term in
    # lme4's term order (terms sorted by decreasing number of levels)
    theta = unname(getME(fit, "theta")), theta_names = names(getME(fit, "theta")),
    lme4_messages = as.list(fit@optinfo$conv$lme4$messages), warnings = as.list(warn),
    tight_refit = list(logLik = as.numeric(logLik(tight)), fixef = as.list(fixef(tight)),
      theta = unname(getME(tight, "theta")), sigma = sigma(tight),
      lme4_messages = as.list(tight@optinfo$conv$lme4$messages)))
}
out$datasets <- list(
  egsingle = list(file = "egsingle.csv", source = "mlmRev::egsingle",
    ids = c("schoolid", "childid")),
  pixel = list(file = "pixel.csv", source = "nlme::Pixel", ids = c("Dog", "Side")))
out$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")), mlmRev = as.character(packageVersion("mlmRev")),
  nlme = as.character(packageVersion("nlme")), Matrix = as.character(packageVersion("Matrix")))
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE),
  "lme4_nested_reference.json")
