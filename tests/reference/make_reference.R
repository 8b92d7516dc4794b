# Regenerates lme4_reference.json (lme4 + lmerTest); run: Rscript make_reference.R
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
early <- read.csv("early.csv", colClasses = c(id = "character", trt = "character"))
sleep <- read.csv("sleepstudy.csv", colClasses = c(Subject = "character"))
models <- list(
  sleepstudy_null = list(data = "sleepstudy", formula = "Reaction ~ 1 + (1|Subject)"),
  sleepstudy_growth = list(data = "sleepstudy", formula = "Reaction ~ Days + (Days|Subject)"),
  early_null = list(data = "early", formula = "cog ~ 1 + (1|id)"),
  early_growth = list(data = "early", formula = "cog ~ age1 + (age1|id)"),
  early_trt = list(data = "early", formula = "cog ~ age1 * trt + (age1|id)"))
out <- list()
for (name in names(models)) for (reml in c(TRUE, FALSE)) {
  m <- models[[name]]; d <- if (m$data == "early") early else sleep
  fit <- lmerTest::lmer(as.formula(m$formula), data = d, REML = reml)
  co <- summary(fit)$coefficients
  vc <- as.data.frame(VarCorr(fit))
  grp <- names(ngrps(fit))[1]
  re <- ranef(fit, condVar = TRUE)[[grp]]
  cv <- attr(re, "postVar")
  out[[paste0(name, if (reml) "_reml" else "_ml")]] <- list(
    name = name, data = m$data, formula = m$formula, REML = reml,
    fixef = as.list(fixef(fit)), se = as.list(co[, "Std. Error"]),
    df_satterthwaite = as.list(co[, "df"]), p_satterthwaite = as.list(co[, "Pr(>|t|)"]),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
      var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    sigma = sigma(fit), logLik = as.numeric(logLik(fit)), AIC = AIC(fit), BIC = BIC(fit),
    deviance_or_REMLcrit = if (reml) REMLcrit(fit) else deviance(fit),
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)), singular = isSingular(fit), ranef_group = grp,
    ranef_first5 = lapply(1:5, function(i) c(list(id = rownames(re)[i]), as.list(re[i, , drop = FALSE]))),
    ranef_condvar_first5 = lapply(1:5, function(i) as.vector(cv[, , i])))
}
small <- lmer(cog ~ age1 + (age1|id), data = early); big <- lmer(cog ~ age1 * trt + (age1|id), data = early)
a <- anova(small, big)
out$lrt <- list(early_trt_vs_growth = list(small = "cog ~ age1 + (age1|id)", big = "cog ~ age1 * trt + (age1|id)",
  chisq = a$Chisq[2], df = a$Df[2], p = a[["Pr(>Chisq)"]][2]))
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE), "lme4_reference.json")
