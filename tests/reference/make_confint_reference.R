# Regenerates confint_reference.json: lme4's profile-likelihood intervals for the
# variance parameters (.sig01.., .sigma) of the models of make_reference.R, REML and ML.
# Run here: Rscript make_confint_reference.R (needs R with lme4 and jsonlite).
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
early <- read.csv("early.csv", colClasses = c(id = "character", trt = "character"))
sleep <- read.csv("sleepstudy.csv", colClasses = c(Subject = "character"))
models <- list(
  sleepstudy_null = list(data = "sleepstudy", formula = "Reaction ~ 1 + (1|Subject)"),
  sleepstudy_growth = list(data = "sleepstudy", formula = "Reaction ~ Days + (Days|Subject)"),
  early_null = list(data = "early", formula = "cog ~ 1 + (1|id)"),
  early_growth = list(data = "early", formula = "cog ~ age1 + (age1|id)"),
  early_trt = list(data = "early", formula = "cog ~ age1 * trt + (age1|id)"))
out <- list(versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))))
for (name in names(models)) for (reml in c(TRUE, FALSE)) {
  m <- models[[name]]; d <- if (m$data == "early") early else sleep
  fit <- lmer(as.formula(m$formula), data = d, REML = reml)
  warnings_seen <- character(0)
  ci <- withCallingHandlers(
    confint(fit, parm = "theta_", method = "profile", level = 0.95, oldNames = TRUE),
    warning = function(w) {warnings_seen <<- c(warnings_seen, conditionMessage(w)); invokeRestart("muffleWarning")})
  vc <- as.data.frame(VarCorr(fit))
  out[[paste0(name, if (reml) "_reml" else "_ml")]] <- list(
    name = name, data = m$data, formula = m$formula, REML = reml, singular = isSingular(fit),
    parameter = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]),
    # the estimates in the same order (lme4's order: sd, cor, sd per block, then sigma)
    estimate = vc$sdcor, grp = vc$grp, var1 = vc$var1, var2 = vc$var2,
    warnings = warnings_seen)
}
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE), "confint_reference.json")
