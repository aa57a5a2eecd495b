-- Argo CD health check for zeroflow.dev/DataPipeline.
--
-- Healthy:     Ready=True (including a pipeline idle at zero replicas: Ready=True reason Idle).
-- Progressing: no status yet; status or the Ready condition older than metadata.generation;
--              Ready missing, Unknown, or False while workers roll out or start.
-- Degraded:    Degraded=True, or Ready=False because the spec is invalid or applying failed.
local hs = {}

local function find_condition(conditions, condition_type)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

local function with_message(prefix, condition)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return prefix .. ": " .. condition.message
  end
  return prefix
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local degraded = find_condition(conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = with_message(degraded.reason or "Degraded", degraded)
  return hs
end

local ready = find_condition(conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  local active = find_condition(conditions, "Active")
  if ready.reason == "Idle" or (active ~= nil and active.status == "False") then
    hs.message = with_message("Idle", ready)
  else
    hs.message = with_message(ready.reason or "Ready", ready)
  end
  return hs
end

if ready.status == "False" and (ready.reason == "InvalidSpec" or ready.reason == "ApplyFailed") then
  hs.status = "Degraded"
  hs.message = with_message(ready.reason, ready)
  return hs
end

-- RollingOut, WorkersStarting, Unknown, or a reason this script does not know yet.
hs.status = "Progressing"
hs.message = with_message(ready.reason or "NotReady", ready)
return hs
