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

# ---- further references for pipeline/analysis (fit_stats.py, functional_form.py): confint_more_reference.json
more <- list(versions = out$versions)
# leave-one-person-out influence (lme4's influence.merMod): sleepstudy growth, REML
fit <- lmer(Reaction ~ Days + (Days|Subject), data = sleep)
inf <- influence(fit, groups = "Subject")
more$influence_sleepstudy_growth_reml <- list(
  formula = "Reaction ~ Days + (Days|Subject)", REML = TRUE,
  group = rownames(inf[["fixed.effects[-Subject]"]]),
  # lme4's cooks.distance scales db' V^-1 db by (m - p) / (m p); m groups, p fixed effects
  cooks_distance_lme4 = unname(cooks.distance(inf)),
  fixef_without = lapply(seq_len(nrow(inf[["fixed.effects[-Subject]"]])), function(i) as.list(inf[["fixed.effects[-Subject]"]][i, ])),
  varcomp_without = lapply(seq_len(nrow(inf[["var.cov.comps[-Subject]"]])), function(i) as.list(inf[["var.cov.comps[-Subject]"]][i, ])))
# the test of the between-person variance in the means model: ML LRT against lm, 50:50 mixture
for (nm in c("early", "sleepstudy")) {
  d <- if (nm == "early") early else sleep
  f <- if (nm == "early") cog ~ 1 + (1|id) else Reaction ~ 1 + (1|Subject)
  m1 <- lmer(f, data = d, REML = FALSE); m0 <- lm(nobars(f), data = d)
  chisq <- 2 * (as.numeric(logLik(m1)) - as.numeric(logLik(m0)))
  more[[paste0("means_variance_lrt_", nm)]] <- list(chisq = chisq, p = 0.5 * pchisq(chisq, 1, lower.tail = FALSE),
    loglik_mixed = as.numeric(logLik(m1)), loglik_ols = as.numeric(logLik(m0)))
}
# Singer & Willett's R^2 of y and y-hat (fixed part)
fit <- lmer(cog ~ age1 * trt + (age1|id), data = early)
more$r2_yhat_early_trt_reml <- list(formula = "cog ~ age1 * trt + (age1|id)", r2 = cor(early$cog, predict(fit, re.form = NA))^2)
# polynomial against saturated means (time as categories, same random part), ML
early$occ <- factor(early$age1)
pairs <- list(early_trt = c("cog ~ age1 * trt + (age1|id)", "cog ~ occ * trt + (age1|id)"),
              early_growth = c("cog ~ age1 + (age1|id)", "cog ~ occ + (age1|id)"))
for (nm in names(pairs)) {
  poly <- lmer(as.formula(pairs[[nm]][1]), data = early, REML = FALSE)
  sat <- lmer(as.formula(pairs[[nm]][2]), data = early, REML = FALSE)
  a <- anova(poly, sat)
  more[[paste0("saturated_lrt_", nm)]] <- list(polynomial = pairs[[nm]][1], saturated = pairs[[nm]][2],
    chisq = a$Chisq[2], df = a$Df[2], p = a[["Pr(>Chisq)"]][2],
    loglik_polynomial = as.numeric(logLik(poly)), loglik_saturated = as.numeric(logLik(sat)))
}
write(toJSON(more, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE), "confint_more_reference.json")
