# Regenerates knots_reference.json: piecewise-linear time written as R writes it,
# pmax(time - k, 0) (a change of slope after the knot k), fitted with lme4 + lmerTest
# on two public data sets already in this folder (sleepstudy.csv, early.csv).
# Run from this folder: Rscript make_knots_reference.R
# Needs lme4, lmerTest, jsonlite (Debian: r-cran-lme4 r-cran-lmertest r-cran-jsonlite).
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})

sleep <- read.csv("sleepstudy.csv", colClasses = c(Subject = "character"))
early <- read.csv("early.csv", colClasses = c(id = "character", trt = "character"))
dat <- list(sleepstudy = sleep, early = early)

models <- list(
  # the first two days are adaptation (Belenky et al. 2003): a change of slope after day 2
  sleep_knot = list(data = "sleepstudy",
                    formula = "Reaction ~ Days + pmax(Days - 2, 0) + (Days | Subject)"),
  sleep_knot_random = list(data = "sleepstudy",
                           formula = "Reaction ~ Days + pmax(Days - 2, 0) + (Days + pmax(Days - 2, 0) | Subject)"),
  sleep_two_knots = list(data = "sleepstudy",
                         formula = "Reaction ~ Days + pmax(Days - 2, 0) + pmax(Days - 6.5, 0) + (Days | Subject)"),
  # three waves (ages 1, 1.5, 2): a knot at age 1.5 (age1 = 0.5) interacting with treatment
  early_knot_trt = list(data = "early",
                        formula = "cog ~ age1 + pmax(age1 - 0.5, 0) + trt + age1:trt + pmax(age1 - 0.5, 0):trt + (1 | id)"))

# a contrast L'beta with lmerTest's Satterthwaite df
slope_after <- function(fit, terms) {
  L <- setNames(rep(0, length(fixef(fit))), names(fixef(fit)))
  L[terms] <- 1
  ct <- lmerTest::contest1D(fit, L)
  list(terms = terms, estimate = ct$Estimate, std_error = ct[["Std. Error"]], df = ct$df)
}

col <- function(co, j) setNames(as.list(co[, j]), rownames(co))
out <- list()
for (name in names(models)) for (reml in c(TRUE, FALSE)) {
  m <- models[[name]]
  fit <- suppressMessages(lmerTest::lmer(as.formula(m$formula), data = dat[[m$data]], REML = reml))
  co <- summary(fit)$coefficients
  vc <- as.data.frame(VarCorr(fit))
  rec <- list(
    data = m$data, formula = m$formula, reml = reml,
    terms = rownames(co),
    estimate = col(co, "Estimate"), std_error = col(co, "Std. Error"), df = col(co, "df"),
    p_value = col(co, "Pr(>|t|)"),
    varcomp = list(grp = vc$grp, var1 = ifelse(is.na(vc$var1), "", vc$var1),
                   var2 = ifelse(is.na(vc$var2), "", vc$var2), vcov = vc$vcov, sdcor = vc$sdcor),
    sigma = sigma(fit), loglik = as.numeric(logLik(fit)), singular = isSingular(fit))
  time <- rownames(co)[2]
  knot <- rownames(co)[3]
  if (reml) rec$slope_after <- slope_after(fit, c(time, knot))
  out[[paste0(name, if (reml) "_reml" else "_ml")]] <- rec
}
out$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                     lmerTest = as.character(packageVersion("lmerTest")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "knots_reference.json")
