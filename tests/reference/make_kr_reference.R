# Regenerates kr_reference.json (pbkrtest + lmerTest Kenward-Roger); run: Rscript make_kr_reference.R
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
early <- read.csv("early.csv", colClasses = c(id = "character", trt = "character"))
sleep <- read.csv("sleepstudy.csv", colClasses = c(Subject = "character"))
pixel <- read.csv("pixel.csv")
# the early data with occasions as labels, for cs(wave | id) beside (1 | id)
early$wave <- factor(early$age)
models <- list(
  sleepstudy_growth = list(data = "sleepstudy", formula = "Reaction ~ Days + (Days|Subject)"),
  sleepstudy_intercept = list(data = "sleepstudy", formula = "Reaction ~ Days + (1|Subject)"),
  sleepstudy_uncorrelated = list(data = "sleepstudy", formula = "Reaction ~ Days + (1|Subject) + (0 + Days|Subject)"),
  early_trt = list(data = "early", formula = "cog ~ age1 * trt + (age1|id)"),
  early_intercept = list(data = "early", formula = "cog ~ age1 * trt + (1|id)"),
  pixel_nested = list(data = "pixel", formula = "pixel ~ day + I(day^2) + (day | Dog) + (1 | Dog:Side)"))
# multi-row contrasts (rows of L, over the fixed effects in lme4's order)
multi <- list(
  sleepstudy_growth = rbind(c(1, 0), c(0, 1)),
  sleepstudy_intercept = rbind(c(1, 0), c(0, 1)),
  sleepstudy_uncorrelated = rbind(c(1, 0), c(0, 1)),
  early_trt = rbind(c(0, 0, 1, 0), c(0, 0, 0, 1)),
  early_intercept = rbind(c(0, 0, 1, 0), c(0, 0, 0, 1), c(0, 1, 0, 0)),
  pixel_nested = rbind(c(0, 1, 0), c(0, 0, 1)))
out <- list()
for (name in names(models)) {
  m <- models[[name]]; d <- switch(m$data, early = early, sleepstudy = sleep, pixel = pixel)
  fit <- lmerTest::lmer(as.formula(m$formula), data = d, REML = TRUE)
  co <- summary(fit, ddf = "Kenward-Roger")$coefficients
  Va <- as.matrix(vcovAdj(fit))
  L <- multi[[name]]
  kr <- KRmodcomp(fit, L)
  st <- kr$stats
  out[[name]] <- list(
    data = m$data, formula = m$formula, terms = names(fixef(fit)),
    fixef = unname(fixef(fit)), se_kr = unname(co[, "Std. Error"]), df_kr = unname(co[, "df"]),
    t_kr = unname(co[, "t value"]), p_kr = unname(co[, "Pr(>|t|)"]),
    vcov = unname(lapply(seq_len(nrow(Va)), function(i) as.numeric(vcov(fit)[i, ]))),
    vcov_adjusted = unname(lapply(seq_len(nrow(Va)), function(i) Va[i, ])),
    multi = list(L = unname(lapply(seq_len(nrow(L)), function(i) L[i, ])),
      F = st$Fstat, ndf = st$ndf, ddf = st$ddf, scale = st$F.scaling, p = st$p.value,
      F_unscaled = st$FstatU))
}
out$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")), pbkrtest = as.character(packageVersion("pbkrtest")))
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE), "kr_reference.json")
